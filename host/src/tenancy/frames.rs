//! WebSocket runs under tenancy: every client frame that starts a run is
//! checked like an invoke (`/v1/graph/ws`: `config.thread_id`;
//! `/v1/graph/live`: the control frame's `thread_id`), and the thread ids
//! the agent reports are claimed as they pass (runs on a new thread).
//! A refused frame never reaches the agent; the client gets an error event
//! and the socket stays open, as with the agent's own refusals.
//!
//! A text frame the gateway cannot read as a JSON object is refused too,
//! not passed on: the agent parses frames with Python's `json`, which
//! takes what `serde_json` refuses (`NaN`, lone surrogates, nesting past
//! 128 levels), so such a frame could name a thread the gateway never saw.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use super::Tenancy;
use super::forward::event_thread_id;
use crate::proxy::{FrameInspector, Verdict};
use crate::store::ResourceKind;

/// The `thread_id` a socket client sends to start a fresh thread.
const NEW_THREAD: &str = "new";

/// Checks one socket's run frames for one tenant.
pub struct RunFrames {
    tenancy: Arc<Tenancy>,
    tenant: String,
    bypass: bool,
    live: bool,
    /// Threads already known to be this tenant's (no registry call again).
    mine: Mutex<HashSet<String>>,
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

impl RunFrames {
    /// The inspector of one socket.
    pub fn new(tenancy: Arc<Tenancy>, tenant: String, bypass: bool, live: bool) -> RunFrames {
        RunFrames {
            tenancy,
            tenant,
            bypass,
            live,
            mine: Mutex::new(HashSet::new()),
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

    fn known(&self, id: &str) -> bool {
        self.mine
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(id)
    }

    fn remember(&self, id: String) {
        self.mine
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id);
    }

    /// Checks a run on `id`, claiming it when unowned.
    async fn run_on(&self, id: String) -> Verdict {
        if self.known(&id) {
            return Verdict::Forward;
        }
        let owner = match self.tenancy.owner(ResourceKind::Thread, &id).await {
            Ok(Some(owner)) => owner,
            Ok(None) => match self
                .tenancy
                .claim(ResourceKind::Thread, &id, &self.tenant)
                .await
            {
                Ok(owner) => owner,
                Err(e) => return Verdict::Refuse(e.to_string()),
            },
            Err(e) => return Verdict::Refuse(e.to_string()),
        };
        if owner == self.tenant {
            self.remember(id);
            Verdict::Forward
        } else if self.bypass {
            Verdict::Forward
        } else {
            Verdict::Refuse(format!("thread {id:?} not found"))
        }
    }
}

impl FrameInspector for RunFrames {
    fn inspect<'a>(&'a self, frame: &'a Message) -> BoxFuture<'a, Verdict> {
        Box::pin(async move {
            match self.asked(frame) {
                Asked::Other | Asked::NewThread => Verdict::Forward,
                Asked::BadId(field) => Verdict::Refuse(format!("`{field}` must be a string")),
                Asked::Unreadable => Verdict::Refuse(
                    "a text frame on a run socket must be a JSON object (no NaN or Infinity, no lone surrogates, at most 128 levels deep)".into(),
                ),
                Asked::Thread(id) => self.run_on(id).await,
            }
        })
    }

    fn inspect_reply<'a>(&'a self, frame: &'a Message) -> BoxFuture<'a, Verdict> {
        Box::pin(async move {
            let Message::Text(text) = frame else {
                return Verdict::Forward;
            };
            match event_thread_id(text.as_bytes()) {
                Some(id) => self.run_on(id).await,
                None => Verdict::Forward,
            }
        })
    }
}
