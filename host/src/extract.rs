//! Extractors for the gateway's own routes whose every rejection is an
//! [`ApiError`]: the documented JSON shape, the right status (400 syntax,
//! 408 slow body, 413 too large, 415 media type, 422 wrong shape), and never
//! a submitted value echoed back.

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::response::{IntoResponse, Response};
use http::HeaderMap;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::request::Parts;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::server::BodyTimeout;

/// Largest body the account routes read (a variable's value is at most
/// 64 KiB, which JSON escaping can grow six-fold).
pub const MAX_ACCOUNT_BODY: usize = 1024 * 1024;

/// A JSON request body (`application/json` or `application/*+json`), or a
/// JSON response.
pub struct Json<T>(pub T);

/// A JSON or `application/x-www-form-urlencoded` request body (login forms).
pub struct JsonOrForm<T>(pub T);

/// A path parameter; invalid ones answer 400 without repeating them.
pub struct Path<T>(pub T);

/// A query string; invalid ones answer 400 without repeating values.
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _: &S) -> Result<Self, ApiError> {
        match media_type(req.headers())? {
            Media::Json => parse_json(&read_body(req).await?).map(Json),
            Media::Form | Media::Other => Err(ApiError::UnsupportedMediaType(
                "expected Content-Type: application/json".into(),
            )),
        }
    }
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonOrForm<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _: &S) -> Result<Self, ApiError> {
        match media_type(req.headers())? {
            Media::Json => parse_json(&read_body(req).await?).map(JsonOrForm),
            Media::Form => parse_form(&read_body(req).await?).map(JsonOrForm),
            Media::Other => Err(ApiError::UnsupportedMediaType(
                "expected Content-Type: application/json or application/x-www-form-urlencoded"
                    .into(),
            )),
        }
    }
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(Path(v)),
            Err(axum::extract::rejection::PathRejection::FailedToDeserializePathParams(_)) => {
                Err(ApiError::BadRequest(
                    "a path parameter is not valid (it must be UTF-8 text)".into(),
                ))
            }
            Err(other) => Err(ApiError::Internal(other.body_text())),
        }
    }
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or_default();
        serde_urlencoded::from_str(query).map(Query).map_err(|e| {
            ApiError::BadRequest(format!(
                "invalid query string: {}",
                describe(&e.to_string())
            ))
        })
    }
}

/// A paging number from a query string within the documented `int64`
/// range; 400 naming the parameter above it. (The stores saturate anyway;
/// this keeps the answer what /openapi.json says.)
pub fn int64_param(name: &str, value: u64) -> Result<u64, ApiError> {
    if i64::try_from(value).is_ok() {
        Ok(value)
    } else {
        Err(ApiError::BadRequest(format!(
            "`{name}`: at most {}",
            i64::MAX
        )))
    }
}

/// What a request body claims to be.
#[derive(Debug, PartialEq)]
enum Media {
    Json,
    Form,
    Other,
}

/// The body's media type; a missing one is [`Media::Other`], two
/// `Content-Type` headers are refused (parsers disagree on which counts).
fn media_type(headers: &HeaderMap) -> Result<Media, ApiError> {
    let mut values = headers.get_all(CONTENT_TYPE).iter();
    let Some(value) = values.next() else {
        return Ok(Media::Other);
    };
    if values.next().is_some() {
        return Err(ApiError::BadRequest(
            "more than one Content-Type header".into(),
        ));
    }
    let essence = value
        .to_str()
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    Ok(match essence.as_str() {
        "application/json" => Media::Json,
        "application/x-www-form-urlencoded" => Media::Form,
        e if e.starts_with("application/") && e.ends_with("+json") => Media::Json,
        _ => Media::Other,
    })
}

/// The whole body, at most [`MAX_ACCOUNT_BODY`] bytes.
async fn read_body(req: Request) -> Result<Bytes, ApiError> {
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_ACCOUNT_BODY as u64) {
        return Err(ApiError::PayloadTooLarge(MAX_ACCOUNT_BODY));
    }
    let body: Body = req.into_body();
    match Limited::new(body, MAX_ACCOUNT_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) => Err(body_error(&*e)),
    }
}

/// 413 for the size limit, 408 for the body deadline, else 400.
fn body_error(e: &(dyn std::error::Error + 'static)) -> ApiError {
    let mut cause = Some(e);
    while let Some(err) = cause {
        if err.is::<LengthLimitError>() {
            return ApiError::PayloadTooLarge(MAX_ACCOUNT_BODY);
        }
        if err.is::<BodyTimeout>() {
            return ApiError::RequestTimeout;
        }
        cause = err.source();
    }
    ApiError::BadRequest("the request body could not be read".into())
}

/// JSON into `T`: 400 when it is not JSON, 422 when it has the wrong shape;
/// messages name the field and position, never the value. Every body these
/// routes read is an object: serde's derived structs also take a JSON array
/// of their fields in order (`[]` created an API key, `[null, null]` was an
/// empty variable change), so an array is refused here.
fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| json_error(&e))?;
    de.end().map_err(|e| {
        ApiError::BadRequest(format!(
            "request body is not valid JSON: trailing characters at {}",
            position(&e)
        ))
    })?;
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        return Err(ApiError::Unprocessable(
            "the body must be a JSON object, not an array".into(),
        ));
    }
    Ok(value)
}

fn json_error(e: &serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let inner = e.inner();
    match inner.classify() {
        serde_json::error::Category::Data => {
            let message = inner.to_string();
            let message = message
                .rsplit_once(" at line ")
                .map_or(message.as_str(), |(m, _)| m);
            let path = e.path().to_string();
            // An unknown field's path could be the client's own key: leave it out.
            let named =
                path != "." && !message.starts_with("unknown field") && is_plain_path(&path);
            let field = if named {
                format!("`{path}`: ")
            } else {
                String::new()
            };
            ApiError::Unprocessable(format!(
                "{field}{} (at {})",
                describe(message),
                position(inner)
            ))
        }
        _ => ApiError::BadRequest(format!(
            "request body is not valid JSON (at {})",
            position(inner)
        )),
    }
}

fn position(e: &serde_json::Error) -> String {
    format!("line {} column {}", e.line(), e.column())
}

/// Field names and indexes only (what our structs can produce).
fn is_plain_path(path: &str) -> bool {
    path.len() <= 100
        && path
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '[' | ']'))
}

/// A urlencoded form into `T`: 422 when it has the wrong shape.
fn parse_form<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_urlencoded::from_bytes(bytes)
        .map_err(|e| ApiError::Unprocessable(format!("form body: {}", describe(&e.to_string()))))
}

/// A serde error message with whatever the client sent removed: serde puts
/// the value first ("invalid type: string \"…\", expected a boolean") and
/// what we expected last, so only known prefixes and the last "expected"
/// part are kept.
fn describe(message: &str) -> String {
    let expected = message.rsplit_once(", expected ").map(|(_, e)| e);
    let with_expected = |what: &str| match expected {
        Some(e) => format!("{what}; expected {e}"),
        None => what.to_owned(),
    };
    // Our own field names: "missing field `password`", "duplicate field `name`".
    let names_our_field = |prefix: &str| {
        message.strip_prefix(prefix).is_some_and(|rest| {
            rest.ends_with('`') && rest.len() < 100 && !rest[..rest.len() - 1].contains('`')
        })
    };
    if names_our_field("missing field `") || names_our_field("duplicate field `") {
        return message.to_owned();
    }
    for (prefix, what) in [
        ("invalid type", "wrong type"),
        ("invalid value", "invalid value"),
        ("invalid length", "wrong length"),
        ("unknown field", "unknown field"),
        ("unknown variant", "unknown value"),
    ] {
        if message.starts_with(prefix) {
            return with_expected(what);
        }
    }
    "the body does not have the expected shape".into()
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[allow(dead_code)]
    #[derive(Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    struct Form {
        username: String,
        is_active: Option<bool>,
    }

    fn refusal(body: &str) -> ApiError {
        parse_json::<Form>(body.as_bytes()).unwrap_err()
    }

    #[test]
    fn wrong_types_name_the_field_not_the_value() {
        let e = refusal(r#"{"username": "u", "is_active": "hunter2, expected pwned"}"#);
        assert!(matches!(e, ApiError::Unprocessable(_)), "{e:?}");
        let text = e.to_string();
        assert!(
            text.starts_with("`is_active`: wrong type; expected a boolean"),
            "{text}"
        );
        assert!(
            !text.contains("hunter2") && !text.contains("pwned"),
            "{text}"
        );
    }

    #[test]
    fn unknown_fields_are_not_repeated() {
        let text = refusal(r#"{"username": "u", "sk-secret-key": 1}"#).to_string();
        assert!(
            text.starts_with("unknown field; expected `username` or `is_active`"),
            "{text}"
        );
        assert!(!text.contains("sk-secret"), "{text}");
    }

    #[test]
    fn missing_fields_are_named_and_syntax_errors_are_400() {
        assert!(
            refusal("{}")
                .to_string()
                .starts_with("missing field `username`")
        );
        assert!(matches!(
            refusal(r#"{"username": "hunter2"#),
            ApiError::BadRequest(_)
        ));
        assert!(matches!(
            refusal(r#"{"username": "u"} trailing"#),
            ApiError::BadRequest(_)
        ));
        let text = refusal(r#"{"username": hunter2}"#).to_string();
        assert!(!text.contains("hunter2"), "{text}");
    }

    #[test]
    fn arrays_are_not_objects() {
        #[derive(Deserialize, Debug)]
        struct Optional {
            #[allow(dead_code)]
            name: Option<String>,
        }
        for body in ["[]", " [null]", "[\"x\"]"] {
            let e = parse_json::<Optional>(body.as_bytes()).unwrap_err();
            assert!(matches!(e, ApiError::Unprocessable(_)), "{body}: {e:?}");
        }
        assert!(parse_json::<Optional>(b" {}").is_ok());
        // Not JSON at all stays a syntax error.
        assert!(matches!(
            parse_json::<Optional>(b"["),
            Err(ApiError::BadRequest(_))
        ));
    }

    #[test]
    fn media_types_follow_the_json_rules() {
        let ct = |values: &[&str]| {
            let mut h = HeaderMap::new();
            values.iter().for_each(|v| {
                h.append(CONTENT_TYPE, v.parse().unwrap());
            });
            media_type(&h)
        };
        assert_eq!(ct(&["application/json"]).unwrap(), Media::Json);
        assert_eq!(
            ct(&["Application/JSON; charset=utf-8"]).unwrap(),
            Media::Json
        );
        assert_eq!(ct(&["application/merge-patch+json"]).unwrap(), Media::Json);
        assert_eq!(
            ct(&["application/x-www-form-urlencoded"]).unwrap(),
            Media::Form
        );
        assert_eq!(ct(&["text/plain"]).unwrap(), Media::Other);
        assert_eq!(ct(&[]).unwrap(), Media::Other);
        assert!(matches!(
            ct(&["application/json", "text/plain"]),
            Err(ApiError::BadRequest(_))
        ));
    }

    #[test]
    fn form_errors_do_not_echo_values() {
        #[allow(dead_code)]
        #[derive(Deserialize, Debug)]
        struct Paging {
            limit: u64,
        }
        let e = parse_form::<Paging>(b"limit=hunter2")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("hunter2"), "{e}");
    }
}
