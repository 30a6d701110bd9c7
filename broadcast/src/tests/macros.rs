//! Assertion macros for tests, in the style of foca's `expect_message!`.

/// Drains the transmits of `$core` and returns the first one to `$to` whose message matches
/// `$pat`; panics listing everything sent otherwise.
macro_rules! expect_message {
    ($core:expr, $to:expr, $pat:pat) => {{
        let mut sent = Vec::new();
        while let Some(t) = $core.poll_transmit() {
            sent.push(t);
        }
        match sent
            .iter()
            .position(|t| t.to == $to && matches!(t.msg, $pat))
        {
            Some(i) => sent.swap_remove(i),
            None => panic!(
                "expected a message to {:?} matching {}, sent: {:#?}",
                $to,
                stringify!($pat),
                sent
            ),
        }
    }};
}

/// Drains the events of `$core` and returns the first matching `$pat`; panics otherwise.
macro_rules! expect_event {
    ($core:expr, $pat:pat) => {
        expect_event!($core, $pat if true)
    };
    ($core:expr, $pat:pat if $guard:expr) => {{
        let mut seen = Vec::new();
        while let Some(e) = $core.poll_event() {
            seen.push(e);
        }
        match seen.iter().position(|e| matches!(e, $pat if $guard)) {
            Some(i) => seen.swap_remove(i),
            None => panic!(
                "expected an event matching {}, got: {:#?}",
                stringify!($pat),
                seen
            ),
        }
    }};
}
