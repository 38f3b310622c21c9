//! Failed-login counters in SQL: both counters of an attempt are created if
//! missing, then locked (`FOR UPDATE`, in key order so two attempts never
//! wait on each other crosswise) and changed in one transaction, so the
//! count is exact across instances.

use tokio_postgres::Row;

use super::*;

fn state(row: &Row) -> FailureState {
    FailureState {
        count: u32::try_from(row.get::<_, i32>(1)).unwrap_or(0),
        locked_until: row.get::<_, Option<i64>>(2).map(unsecs),
        last_failure_at: unsecs(row.get(3)),
        lockouts: u32::try_from(row.get::<_, i32>(4)).unwrap_or(0),
    }
}

fn int(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// Locks (creating if needed) the counters of `keys` and returns
/// `(account, pair)` as they are.
async fn lock_both(
    tx: &deadpool_postgres::Transaction<'_>,
    keys: &AttemptKeys,
) -> StoreResult<(FailureState, FailureState)> {
    let (account, pair) = (keys.account.as_bytes(), keys.pair.as_bytes());
    // The account key is a prefix of the pair key, so this is key order.
    tx.execute(
        "INSERT INTO login_failures (key) VALUES ($1), ($2) ON CONFLICT (key) DO NOTHING",
        &[&account, &pair],
    )
    .await
    .map_err(db_error)?;
    let rows = tx
        .query(
            "SELECT key, count, locked_until, last_failure_at, lockouts FROM login_failures \
             WHERE key = $1 OR key = $2 ORDER BY key FOR UPDATE",
            &[&account, &pair],
        )
        .await
        .map_err(db_error)?;
    let mut found = (FailureState::default(), FailureState::default());
    for row in &rows {
        let key: Vec<u8> = row.get(0);
        if key == account {
            found.0 = state(row);
        } else {
            found.1 = state(row);
        }
    }
    Ok(found)
}

/// Writes `state` under `key`. A clear state is written as a zeroed row,
/// never deleted here: a row deleted and inserted again while concurrent
/// attempts insert it if missing let two of them wait on each other's new
/// row (a deadlock). Zeroed rows are as good as none, and the periodic
/// prune removes them.
async fn write(
    tx: &deadpool_postgres::Transaction<'_>,
    key: &str,
    state: &FailureState,
) -> StoreResult<()> {
    let key = key.as_bytes();
    let state = if state.is_clear() {
        &FailureState::default()
    } else {
        state
    };
    tx.execute(
        "INSERT INTO login_failures (key, count, locked_until, last_failure_at, lockouts) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (key) DO UPDATE SET count = $2, \
         locked_until = $3, last_failure_at = $4, lockouts = $5",
        &[
            &key,
            &int(state.count),
            &state.locked_until.map(secs),
            &secs(state.last_failure_at),
            &int(state.lockouts),
        ],
    )
    .await
    .map_err(db_error)?;
    Ok(())
}

impl PgStore {
    pub(super) async fn begin_login_attempt_sql(
        &self,
        keys: &AttemptKeys,
        now: u64,
        policy: LoginPolicy,
    ) -> StoreResult<AttemptVerdict> {
        self.with_transaction(|mut c| async move {
            let tx = c.transaction().await.map_err(db_error)?;
            let (account, pair) = lock_both(&tx, keys).await?;
            let locked = |retry_after: u64, scope| AttemptVerdict::Locked {
                retry_after: retry_after.max(1),
                scope,
            };
            let verdict = match (
                pair.admit(now, policy.per_address),
                account.admit(now, policy.per_account),
            ) {
                (Err(wait), _) => locked(wait, LockScope::Address),
                (Ok(_), Err(wait)) => locked(wait, LockScope::Account),
                (Ok(next_pair), Ok(next_account)) => {
                    write(&tx, &keys.pair, &next_pair).await?;
                    write(&tx, &keys.account, &next_account).await?;
                    AttemptVerdict::Admitted
                }
            };
            tx.commit().await.map_err(db_error)?;
            Ok(verdict)
        })
        .await
    }

    pub(super) async fn finish_login_attempt_sql(
        &self,
        keys: &AttemptKeys,
        outcome: AttemptOutcome,
        policy: LoginPolicy,
    ) -> StoreResult<()> {
        let pair_policy = match outcome {
            AttemptOutcome::Failed => return Ok(()),
            AttemptOutcome::Succeeded => None,
            AttemptOutcome::NotChecked => Some(policy.per_address),
        };
        self.with_transaction(|mut c| async move {
            let tx = c.transaction().await.map_err(db_error)?;
            let (account, pair) = lock_both(&tx, keys).await?;
            let next_pair = match pair_policy {
                Some(p) => pair.refund(p),
                None => FailureState::default(),
            };
            write(&tx, &keys.pair, &next_pair).await?;
            write(&tx, &keys.account, &account.refund(policy.per_account)).await?;
            tx.commit().await.map_err(db_error)
        })
        .await
    }

    pub(super) async fn failure_state_sql(&self, key: &str) -> StoreResult<FailureState> {
        self.with(|c| async move {
            let stmt = c
                .prepare_cached(
                    "SELECT key, count, locked_until, last_failure_at, lockouts \
                     FROM login_failures WHERE key = $1",
                )
                .await
                .map_err(db_error)?;
            let row = c
                .query_opt(&stmt, &[&key.as_bytes()])
                .await
                .map_err(db_error)?;
            Ok(row.as_ref().map(state).unwrap_or_default())
        })
        .await
    }

    pub(super) async fn prune_failures_sql(&self, before: u64) -> StoreResult<u64> {
        let before = secs(before);
        self.with(|c| async move {
            c.execute(
                "DELETE FROM login_failures \
                 WHERE GREATEST(last_failure_at, COALESCE(locked_until, 0)) < $1",
                &[&before],
            )
            .await
            .map_err(db_error)
        })
        .await
    }
}
