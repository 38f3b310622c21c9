//! The error plugin code returns with `?`.

use std::fmt;

/// Why a plugin could not answer (storage failed, a dependency is down, the
/// config is wrong). The host logs it with the plugin's name and fails the
/// request closed (503); from `new` at load, it stops the server (or keeps
/// the last good version on reload) naming the plugin's `config`.
///
/// A `String`, a `&str`, the SDK's own errors and the standard library's
/// common ones (I/O, UTF-8, number parsing, JSON) convert into it, so `?`
/// works on most results; for others, `.map_err(Error::msg)` or
/// `Error::msg(e.to_string())`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(String);

impl Error {
    /// An error with this message.
    pub fn msg(message: impl Into<String>) -> Self {
        Error(message.into())
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

/// Conversions from error types that say what went wrong in their text.
macro_rules! from_display {
    ($($t:ty),* $(,)?) => {
        $(impl From<$t> for Error {
            fn from(e: $t) -> Self {
                Error(e.to_string())
            }
        })*
    };
}

from_display!(
    crate::http::HttpError,
    serde_json::Error,
    std::io::Error,
    std::fmt::Error,
    std::num::ParseIntError,
    std::num::ParseFloatError,
    std::str::Utf8Error,
    std::string::FromUtf8Error,
    std::time::SystemTimeError,
    Box<dyn std::error::Error + Send + Sync>,
);

impl From<String> for Error {
    fn from(s: String) -> Self {
        Error(s)
    }
}

impl From<&str> for Error {
    fn from(s: &str) -> Self {
        Error(s.to_owned())
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
