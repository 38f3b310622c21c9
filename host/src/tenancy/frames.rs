//! WebSocket runs: every client frame that starts a run on a named thread
//! (`/v1/graph/ws`: `config.thread_id`; `/v1/graph/live`: the control
//! frame's `thread_id`) is checked like an invoke on it, by the ownership
//! policy (tenancy on) and the authorizer; with tenancy, the thread ids the
//! agent reports are claimed as they pass (runs on a new thread).
//! A refused frame never reaches the agent; the client gets an error event
//! and the socket stays open, as with the agent's own refusals.
//!
//! A text frame the gateway cannot read as a JSON object is refused too,
//! not passed on: the agent parses frames with Python's `json`, which
//! takes what `serde_json` refuses (`NaN`, lone surrogates, nesting past
//! 128 levels), so such a frame could name a thread the gateway never saw.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use super::Tenancy;
use super::forward::event_thread_id;
use crate::accounts::Accounts;
use crate::error::ApiError;
use crate::identity::{Identity, IdentityOrigin};
use crate::pipeline::Authorization;
use crate::plugins::Access;
use crate::proxy::{FrameInspector, Verdict};
use crate::store::{ResourceKind, unix_now};

/// The `thread_id` a socket client sends to start a fresh thread.
const NEW_THREAD: &str = "new";

/// Checks one socket's run frames: each run on a named thread is put to
/// the authorizer (as `graph`/`stream` with that `resource-id`), and, with
/// tenancy on, to the ownership policy first; and the caller's credential
/// is re-checked as frames pass, so a revocation reaches an open socket.
pub struct RunFrames {
    live: bool,
    who: Identity,
    authorization: Authorization,
    tenant: Option<TenantFrames>,
    credential: Credential,
}

/// How often the credential is re-checked on frames that start no run
/// (audio on `/v1/graph/live`); a run frame always re-checks it.
const RECHECK_EVERY: Duration = Duration::from_secs(1);

/// The credential an open socket was authenticated with.
pub struct Credential {
    accounts: Arc<Accounts>,
    origin: IdentityOrigin,
    /// The token's `exp` (JWTs only).
    expires_at: Option<u64>,
    checked_at: Mutex<Option<Instant>>,
}

impl Credential {
    /// The credential of `who`, authenticated as `origin`.
    pub fn new(accounts: Arc<Accounts>, origin: IdentityOrigin, who: &Identity) -> Credential {
        let expires_at = match origin {
            IdentityOrigin::Jwt | IdentityOrigin::Account { .. } => {
                who.claims.get("exp").and_then(Value::as_u64)
            }
            _ => None,
        };
        Credential {
            accounts,
            origin,
            expires_at,
            checked_at: Mutex::new(None),
        }
    }

    /// `None` while the credential is good; else the verdict on the frame:
    /// an ended credential ends the socket, a store that cannot answer
    /// refuses the frame (fail closed) and leaves the socket open.
    async fn recheck(&self, run: bool) -> Option<Verdict> {
        let now = Instant::now();
        {
            let checked = self.checked_at.lock().unwrap_or_else(|e| e.into_inner());
            if !run && checked.is_some_and(|at| now.duration_since(at) < RECHECK_EVERY) {
                return None;
            }
        }
        if self.expires_at.is_some_and(|exp| unix_now() >= exp) {
            return Some(Verdict::End("your token has expired".into()));
        }
        match self.accounts.still_valid(&self.origin).await {
            Ok(()) => {
                *self.checked_at.lock().unwrap_or_else(|e| e.into_inner()) = Some(now);
                None
            }
            Err(e @ ApiError::InvalidCredentials { .. }) => Some(Verdict::End(e.to_string())),
            Err(e) => Some(Verdict::Refuse(e.to_string())),
        }
    }
}

/// The tenancy side of a socket: whose runs these are.
pub struct TenantFrames {
    tenancy: Arc<Tenancy>,
    tenant: String,
    bypass: bool,
}

/// What a client frame asks for.
enum Asked {
    /// Not a run frame (binary audio, ping, close).
    Other,
    /// A text frame that is not a JSON object the gateway can read.
    Unreadable,
    /// A run on a thread the agent makes.
    NewThread,
    /// A run on this thread.
    Thread(String),
    /// A thread id that is not a string.
    BadId(&'static str),
}

impl TenantFrames {
    /// The tenancy side of one tenant's socket.
    pub fn new(tenancy: Arc<Tenancy>, tenant: String, bypass: bool) -> TenantFrames {
        TenantFrames {
            tenancy,
            tenant,
            bypass,
        }
    }

    /// The recorded owner of `id`; another tenant's thread is refused as
    /// "not found" (bypass roles pass). Looked up on every run, never
    /// remembered per socket: a thread its owner deletes and another
    /// tenant then claims must stop being this socket's at once (the
    /// registry's own cache is kept current by claims and releases).
    async fn owner(&self, id: &str) -> Result<Option<String>, Verdict> {
        match self.tenancy.owner(ResourceKind::Thread, id).await {
            Ok(Some(owner)) if owner != self.tenant && !self.bypass => Err(not_found(id)),
            Ok(owner) => Ok(owner),
            Err(e) => Err(Verdict::Refuse(e.to_string())),
        }
    }

    /// Claims `id` (unowned, and the run allowed) for this tenant.
    async fn claim(&self, id: &str) -> Result<(), Verdict> {
        match self
            .tenancy
            .claim(ResourceKind::Thread, id, &self.tenant)
            .await
        {
            Ok(owner) if owner == self.tenant || self.bypass => Ok(()),
            Ok(_) => Err(not_found(id)),
            Err(e) => Err(Verdict::Refuse(e.to_string())),
        }
    }
}

fn not_found(id: &str) -> Verdict {
    Verdict::Refuse(format!("thread {id:?} not found"))
}

impl RunFrames {
    /// The inspector of one socket (`live`: `/v1/graph/live`, whose
    /// control frame names the thread at its root).
    pub fn new(
        live: bool,
        who: Identity,
        authorization: Authorization,
        tenant: Option<TenantFrames>,
        credential: Credential,
    ) -> RunFrames {
        RunFrames {
            live,
            who,
            authorization,
            tenant,
            credential,
        }
    }

    fn asked(&self, frame: &Message) -> Asked {
        let Message::Text(text) = frame else {
            return Asked::Other;
        };
        let Ok(Value::Object(json)) = serde_json::from_str::<Value>(text.as_str()) else {
            return Asked::Unreadable;
        };
        let (id, field) = if self.live {
            (json.get("thread_id"), "thread_id")
        } else {
            (
                json.get("config").and_then(|c| c.get("thread_id")),
                "config.thread_id",
            )
        };
        match id {
            None | Some(Value::Null) => Asked::NewThread,
            Some(Value::String(s)) => {
                let s = s.trim_matches(|c: char| {
                    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
                });
                if s.is_empty() || s == NEW_THREAD {
                    Asked::NewThread
                } else {
                    Asked::Thread(s.to_owned())
                }
            }
            Some(_) => Asked::BadId(field),
        }
    }

    /// Checks a run on `id` in the order of an HTTP run: ownership (another
    /// tenant's thread is "not found"), then the authorizer, then the
    /// first-use claim of an unowned thread.
    async fn run_on(&self, id: String) -> Verdict {
        let owner = match &self.tenant {
            Some(t) => match t.owner(&id).await {
                Ok(owner) => owner,
                Err(refused) => return refused,
            },
            None => None,
        };
        let access = Access {
            resource: "graph",
            action: "stream",
            resource_id: Some(id.clone()),
            owner: owner.clone(),
            tenant: self.tenant.as_ref().map(|t| t.tenant.clone()),
        };
        let decision = self.authorization.authorize(&self.who, &access).await;
        crate::metrics::global().authz_result(decision.as_ref().map(|_| ()));
        if let Err(e) = decision {
            return Verdict::Refuse(e.to_string());
        }
        if let (Some(t), None) = (&self.tenant, owner)
            && let Err(refused) = t.claim(&id).await
        {
            return refused;
        }
        Verdict::Forward
    }
}

impl FrameInspector for RunFrames {
    fn inspect<'a>(&'a self, frame: &'a Message) -> BoxFuture<'a, Verdict> {
        Box::pin(async move {
            let asked = self.asked(frame);
            if !matches!(
                frame,
                Message::Close(_) | Message::Ping(_) | Message::Pong(_)
            ) {
                let run = matches!(asked, Asked::Thread(_) | Asked::NewThread);
                if let Some(verdict) = self.credential.recheck(run).await {
                    return verdict;
                }
            }
            match asked {
                Asked::Other | Asked::NewThread => Verdict::Forward,
                Asked::BadId(field) => Verdict::Refuse(format!("`{field}` must be a string")),
                Asked::Unreadable => Verdict::Refuse(
                    "a text frame on a run socket must be a JSON object (no NaN or Infinity, no lone surrogates, at most 128 levels deep)".into(),
                ),
                Asked::Thread(id) => self.run_on(id).await,
            }
        })
    }

    /// The thread an agent event reports: with tenancy, claimed for the
    /// caller when new (a run on a thread the agent made), refused when it
    /// is another tenant's.
    fn inspect_reply<'a>(&'a self, frame: &'a Message) -> BoxFuture<'a, Verdict> {
        Box::pin(async move {
            let (Some(t), Message::Text(text)) = (&self.tenant, frame) else {
                return Verdict::Forward;
            };
            let Some(id) = event_thread_id(text.as_bytes()) else {
                return Verdict::Forward;
            };
            match t.owner(&id).await {
                Ok(Some(_)) => Verdict::Forward,
                Ok(None) => t.claim(&id).await.err().unwrap_or(Verdict::Forward),
                Err(refused) => refused,
            }
        })
    }
}
