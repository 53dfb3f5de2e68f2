//! The life of a stream (docs/reference.md §14, docs/lifecycle.md): soft and hard deletes,
//! undeletes and truncations.

use super::*;

impl Fuzz {
    /// The life of a stream (docs/reference.md §14): soft and hard deletes, undeletes and truncations of
    /// the pool's streams with versions and flags at the edges. Rare, since a hard delete
    /// takes a pool stream out for the rest of the run.
    pub(crate) fn gen_lifecycle(&mut self) -> (Call, After) {
        let stream = self.pick_stream();
        let known = self.known(stream);
        match self.rng.random_range(0..10) {
            0..3 => {
                let expected = self.pick_expected(stream);
                let hard = match self.rng.random_range(0..10) {
                    0 => None,
                    1..3 => Some(true),
                    _ => Some(false),
                };
                let call = Call::new("delete_stream", "SELECT es.delete_stream($1, $2, $3)")
                    .arg(stream)
                    .arg(expected)
                    .arg(hard);
                (call, After::Version(stream))
            }
            3..6 => (
                Call::new("undelete_stream", "SELECT es.undelete_stream($1)").arg(stream),
                After::Version(stream),
            ),
            _ => {
                let before = self.pick_bigint(known);
                let call = Call::new("truncate_stream", "SELECT es.truncate_stream($1, $2)")
                    .arg(stream)
                    .arg(before);
                (call, After::Nothing)
            }
        }
    }
}
