//! Tests of the audit part of the `Store` contract, written against
//! `S: Store` (so another store can run them) and run on `SledStore`.

use super::*;

const T0: u64 = 1_700_000_000;

fn event(time: u64, kind: AuditKind, actor: &str, subject: Option<&str>) -> NewAuditEvent {
    NewAuditEvent {
        time,
        kind,
        actor: Some(actor.into()),
        subject: subject.map(Into::into),
        client_ip: Some("127.0.0.1".into()),
        request_id: Some(format!("req-{time}")),
        details: serde_json::Map::new(),
    }
}

fn kinds(page: &Page<AuditEvent>) -> Vec<(u64, AuditKind)> {
    page.items
        .iter()
        .map(|e| (e.event.time, e.event.kind))
        .collect()
}

/// Appends a small history: alice logs in, fails, creates bob, bob logs in.
async fn seed<S: Store>(s: &S) -> Vec<AuditEvent> {
    let mut out = Vec::new();
    for e in [
        event(T0, AuditKind::LoginSucceeded, "alice", Some("alice")),
        event(T0 + 10, AuditKind::LoginFailed, "alice", Some("alice")),
        event(T0 + 10, AuditKind::UserCreated, "alice", Some("Bob")),
        event(T0 + 20, AuditKind::LoginSucceeded, "bob", Some("bob")),
    ] {
        out.push(s.append_audit(e).await.unwrap());
    }
    out
}

async fn lists_newest_first_with_ids<S: Store>(s: &S) {
    let appended = seed(s).await;
    let all = s.list_audit(&AuditQuery::default()).await.unwrap();
    assert_eq!(all.total, 4);
    assert_eq!(
        kinds(&all),
        vec![
            (T0 + 20, AuditKind::LoginSucceeded),
            // Same second: recording order decides, newest first.
            (T0 + 10, AuditKind::UserCreated),
            (T0 + 10, AuditKind::LoginFailed),
            (T0, AuditKind::LoginSucceeded),
        ]
    );
    assert_eq!(all.items[3], appended[0]);
    assert!(all.items.iter().all(|e| is_valid_id(&e.id)));
}

async fn filters_and_pages<S: Store>(s: &S) {
    seed(s).await;
    let by_kind = AuditQuery {
        kind: Some(AuditKind::LoginSucceeded),
        ..Default::default()
    };
    let page = s.list_audit(&by_kind).await.unwrap();
    assert_eq!(
        kinds(&page),
        vec![
            (T0 + 20, AuditKind::LoginSucceeded),
            (T0, AuditKind::LoginSucceeded)
        ]
    );

    // A user matches as actor or subject, ignoring case.
    let bob = AuditQuery {
        user: Some("BOB".into()),
        ..Default::default()
    };
    let page = s.list_audit(&bob).await.unwrap();
    assert_eq!(
        kinds(&page),
        vec![
            (T0 + 20, AuditKind::LoginSucceeded),
            (T0 + 10, AuditKind::UserCreated)
        ]
    );

    // Both ends of a time range are inclusive.
    let window = AuditQuery {
        since: Some(T0 + 10),
        until: Some(T0 + 10),
        ..Default::default()
    };
    assert_eq!(s.list_audit(&window).await.unwrap().total, 2);
    let open_end = AuditQuery {
        until: Some(u64::MAX),
        since: Some(T0 + 11),
        ..Default::default()
    };
    assert_eq!(s.list_audit(&open_end).await.unwrap().total, 1);

    // Paging: total counts every match, items only the page.
    let second = AuditQuery {
        offset: 1,
        limit: 2,
        ..Default::default()
    };
    let page = s.list_audit(&second).await.unwrap();
    assert_eq!(page.total, 4);
    assert_eq!(
        kinds(&page),
        vec![
            (T0 + 10, AuditKind::UserCreated),
            (T0 + 10, AuditKind::LoginFailed)
        ]
    );
    let past_end = AuditQuery {
        offset: 10,
        ..Default::default()
    };
    let page = s.list_audit(&past_end).await.unwrap();
    assert_eq!((page.items.len(), page.total), (0, 4));
}

async fn prunes_older_than_retention<S: Store>(s: &S) {
    seed(s).await;
    assert_eq!(s.prune_audit(T0 + 10).await.unwrap(), 1);
    let left = s.list_audit(&AuditQuery::default()).await.unwrap();
    assert_eq!(left.total, 3);
    assert!(left.items.iter().all(|e| e.event.time >= T0 + 10));
    assert_eq!(s.prune_audit(T0 + 10).await.unwrap(), 0);
}

#[tokio::test]
async fn audit_lists_newest_first_with_ids() {
    lists_newest_first_with_ids(&SledStore::open_temporary().unwrap()).await;
}

#[tokio::test]
async fn audit_filters_and_pages() {
    filters_and_pages(&SledStore::open_temporary().unwrap()).await;
}

#[tokio::test]
async fn audit_prunes_older_than_retention() {
    prunes_older_than_retention(&SledStore::open_temporary().unwrap()).await;
}

#[tokio::test]
async fn audit_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = SledStore::open(dir.path()).unwrap();
        seed(&s).await;
        s.flush().await.unwrap();
    }
    let s = SledStore::open(dir.path()).unwrap();
    assert_eq!(s.list_audit(&AuditQuery::default()).await.unwrap().total, 4);
}

#[test]
fn kinds_round_trip_through_their_names() {
    for kind in AuditKind::ALL {
        assert_eq!(kind.as_str().parse::<AuditKind>(), Ok(kind));
        let json = serde_json::to_value(kind).unwrap();
        assert_eq!(json, serde_json::json!(kind.as_str()));
    }
    assert_eq!("login".parse::<AuditKind>(), Err(UnknownAuditKind));
}

#[test]
fn events_serialize_with_type_and_flat_fields() {
    let e = AuditEvent {
        id: "0".repeat(32),
        event: event(T0, AuditKind::Logout, "alice", None),
    };
    let json = serde_json::to_value(&e).unwrap();
    assert_eq!(json["type"], "logout");
    assert_eq!(json["actor"], "alice");
    assert_eq!(json["id"], "0".repeat(32));
    let back: AuditEvent = serde_json::from_value(json).unwrap();
    assert_eq!(back, e);
}
