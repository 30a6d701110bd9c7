//! SWIM membership with the Lifeguard extensions.
