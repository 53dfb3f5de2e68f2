//! The account commands and their reads (docs/accounts-and-aggregates.md): `es.open_account`,
//! `es.deposit`, `es.withdraw`, `es.freeze_account`, `es.close_account`, `es.account_state` (time
//! travel) and `es.account_history`, with amounts and balances at the edges.

use super::*;

impl Fuzz {
    pub(crate) fn gen_open_account(&mut self) -> (Call, After) {
        let holder = self.pick_text();
        let call = if self.chance(0.8) {
            let balance = self.pick_balance();
            Call::new("open_account", "SELECT es.open_account($1, $2)")
                .arg(holder)
                .arg(balance)
        } else {
            Call::new("open_account(default)", "SELECT es.open_account($1)").arg(holder)
        };
        (call, After::Opened)
    }

    /// `es.deposit` or `es.withdraw`, in their 4-, 3-, 2-argument and named forms.
    pub(crate) fn gen_money(&mut self, deposit: bool) -> (Call, After) {
        let f = if deposit { "deposit" } else { "withdraw" };
        let account = self.pick_account();
        let amount = self.pick_amount();
        let description = self.pick_text();
        let expected = if self.chance(0.6) {
            None
        } else {
            let known = self.known(account);
            self.pick_bigint(known)
        };
        let call = match self.rng.random_range(0..10) {
            0..6 => Call::new(f, format!("SELECT es.{f}($1, $2, $3, $4)"))
                .arg(account)
                .arg(amount)
                .arg(description)
                .arg(expected),
            6..8 => Call::new(f, format!("SELECT es.{f}($1, $2, $3)"))
                .arg(account)
                .arg(amount)
                .arg(description),
            8 => Call::new(f, format!("SELECT es.{f}($1, $2)"))
                .arg(account)
                .arg(amount),
            _ => Call::new(
                f,
                format!(
                    "SELECT es.{f}(account_id => $1, amount_cents => $2, expected_version => $3)"
                ),
            )
            .arg(account)
            .arg(amount)
            .arg(expected),
        };
        (call, After::Version(account))
    }

    pub(crate) fn gen_freeze_or_close(&mut self, freeze: bool) -> (Call, After) {
        let f = if freeze {
            "freeze_account"
        } else {
            "close_account"
        };
        let account = self.pick_account();
        let reason = self.pick_text();
        let call = Call::new(f, format!("SELECT es.{f}($1, $2)"))
            .arg(account)
            .arg(reason);
        (call, After::Version(account))
    }

    pub(crate) fn gen_account_state(&mut self) -> (Call, After) {
        let account = self.pick_account();
        let known = self.known(account);
        let at = self.pick_bigint(known);
        let call = match self.rng.random_range(0..6) {
            0 => Call::new("account_state", "SELECT es.account_state($1)").arg(account),
            1 | 2 => {
                let as_of = self.pick_time();
                Call::new(
                    "account_state(as_of, at)",
                    "SELECT es.account_state($1, $2, $3)",
                )
                .arg(account)
                .arg(as_of)
                .arg(at)
            }
            3 => {
                let bound = self.pick(&["infinity", "-infinity"]);
                Call::new(
                    "account_state(infinite as_of)",
                    format!("SELECT es.account_state($1, '{bound}', $2)"),
                )
                .arg(account)
                .arg(at)
            }
            4 => Call::new(
                "account_state(at)",
                "SELECT es.account_state($1, at_version => $2)",
            )
            .arg(account)
            .arg(at),
            _ => {
                let other = self.pick_account();
                Call::new(
                    "account_state(several)",
                    "SELECT es.account_state(s) FROM unnest($1::uuid[]) s",
                )
                .arg(vec![account, other, account])
            }
        };
        (call, After::Nothing)
    }

    pub(crate) fn gen_account_history(&mut self) -> (Call, After) {
        let account = self.pick_account();
        let sql = self.pick(&[
            "SELECT count(*), sum(amount_cents), max(balance_cents)::text \
             FROM es.account_history($1)",
            "SELECT * FROM es.account_history($1) LIMIT 3",
            "SELECT h.* FROM es.account_history($1) h ORDER BY version DESC LIMIT 1",
            "SELECT (es.account_history($1)).balance_cents",
        ]);
        (
            Call::new("account_history", sql).arg(account),
            After::Nothing,
        )
    }
}
