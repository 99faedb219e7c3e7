//! Test-only hooks (feature `test-hooks`): make an endpoint misbehave on purpose.

use std::sync::Mutex;

/// Where a planned panic happens.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Where {
    /// In the actor's handler of the next attempt.
    Handler,
    /// In the HTTP call task of the next attempt.
    Call,
}

static PLANNED: Mutex<Vec<(Where, String)>> = Mutex::new(Vec::new());

fn plan(place: Where, name: &str) {
    PLANNED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .push((place, name.to_owned()));
}

/// The EndpointActor of deployment `name` panics while handling its next attempt (once).
pub fn panic_on_next_attempt(name: &str) {
    plan(Where::Handler, name);
}

/// The HTTP call task of the next attempt on deployment `name` panics (once).
pub fn panic_in_next_call(name: &str) {
    plan(Where::Call, name);
}

/// True (once per plan) when `name` is to panic at `place` now.
pub(crate) fn take(place: Where, name: &str) -> bool {
    let mut planned = PLANNED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    match planned
        .iter()
        .position(|(at, who)| *at == place && who == name)
    {
        Some(index) => {
            planned.swap_remove(index);
            true
        }
        None => false,
    }
}
