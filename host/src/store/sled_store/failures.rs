//! The blocking sled parts of failed-login counters: both counters of an
//! attempt change in one transaction on the `failures` tree.

use sled::transaction::TransactionalTree;

use super::*;

/// The counter under `key` inside a transaction (default if none).
fn read(tx: &TransactionalTree, key: &str) -> TxResult<FailureState> {
    match tx.get(key)? {
        Some(bytes) => dec("failure counter", &bytes).or_else(abort),
        None => Ok(FailureState::default()),
    }
}

/// Writes `state` under `key`, or removes the key when nothing is left.
fn write(tx: &TransactionalTree, key: &str, state: &FailureState) -> TxResult<()> {
    if state.is_clear() {
        tx.remove(key)?;
    } else {
        tx.insert(key, enc(state).or_else(abort)?)?;
    }
    Ok(())
}

impl SledStore {
    pub(super) fn begin_login_attempt_blocking(
        &self,
        keys: &AttemptKeys,
        now: u64,
        policy: LoginPolicy,
    ) -> StoreResult<AttemptVerdict> {
        self.failures
            .transaction(|tx| {
                let locked = |retry_after: u64, scope| AttemptVerdict::Locked {
                    retry_after: retry_after.max(1),
                    scope,
                };
                let pair = match read(tx, &keys.pair)?.admit(now, policy.per_address) {
                    Ok(next) => next,
                    Err(wait) => return Ok(locked(wait, LockScope::Address)),
                };
                let account = match read(tx, &keys.account)?.admit(now, policy.per_account) {
                    Ok(next) => next,
                    Err(wait) => return Ok(locked(wait, LockScope::Account)),
                };
                write(tx, &keys.pair, &pair)?;
                write(tx, &keys.account, &account)?;
                Ok(AttemptVerdict::Admitted)
            })
            .map_err(tx_error)
    }

    pub(super) fn finish_login_attempt_blocking(
        &self,
        keys: &AttemptKeys,
        outcome: AttemptOutcome,
        policy: LoginPolicy,
    ) -> StoreResult<()> {
        let (pair, account) = match outcome {
            AttemptOutcome::Failed => return Ok(()),
            AttemptOutcome::Succeeded => (None, policy.per_account),
            AttemptOutcome::NotChecked => (Some(policy.per_address), policy.per_account),
        };
        self.failures
            .transaction(|tx| {
                let next_pair = match pair {
                    Some(p) => read(tx, &keys.pair)?.refund(p),
                    None => FailureState::default(),
                };
                write(tx, &keys.pair, &next_pair)?;
                let next_account = read(tx, &keys.account)?.refund(account);
                write(tx, &keys.account, &next_account)
            })
            .map_err(tx_error)
    }

    pub(super) fn failure_state_blocking(&self, key: &str) -> StoreResult<FailureState> {
        match self.failures.get(key).map_err(storage)? {
            Some(bytes) => dec("failure counter", &bytes),
            None => Ok(FailureState::default()),
        }
    }

    pub(super) fn prune_failures_blocking(&self, before: u64) -> StoreResult<u64> {
        let mut removed = 0;
        for item in self.failures.iter() {
            let (k, v) = item.map_err(storage)?;
            let st: FailureState = dec("failure counter", &v)?;
            let last = st.last_failure_at.max(st.locked_until.unwrap_or(0));
            if last >= before || st.is_locked(before) {
                continue;
            }
            let swapped = self
                .failures
                .compare_and_swap(&k, Some(&v), None as Option<&[u8]>);
            if swapped.map_err(storage)?.is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }
}
