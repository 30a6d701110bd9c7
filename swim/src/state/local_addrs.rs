//! Changing our own addresses after start, when the transport reports where it really listens.

use super::{Membership, Status};
use crate::Identity;
use crate::error::ConfigError;
use crate::message::{self, Address};

impl<T: Identity> Membership<T> {
    /// Replaces our own addresses, for instance once the transport reports where it listens.
    ///
    /// If they changed, we announce ourselves alive with a higher incarnation, so that every
    /// member learns them (a newer incarnation is the only way to override old addresses).
    /// Returns whether anything changed; fails, changing nothing, if `addrs` breaks the message
    /// bounds.
    pub fn set_local_addrs(&mut self, addrs: Vec<Address>) -> Result<bool, ConfigError> {
        if addrs.len() > message::MAX_ADDRESSES
            || addrs.iter().any(|a| a.0.len() > message::MAX_ADDRESS_LEN)
        {
            return Err(ConfigError::OutOfRange {
                field: "addrs",
                limit: "at most MAX_ADDRESSES addresses of at most MAX_ADDRESS_LEN bytes",
            });
        }
        if *self.my_addrs == *addrs {
            return Ok(false);
        }
        self.my_addrs = addrs.into();
        if self.status == Status::Active {
            self.incarnation = self.incarnation.saturating_add(1);
            self.broadcasts.push(self.my_update());
        }
        Ok(true)
    }

    /// Our own addresses, as we announce them.
    pub fn local_addrs(&self) -> &[Address] {
        &self.my_addrs
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use crate::{Address, Config, Membership};

    #[test]
    fn new_addresses_raise_the_incarnation_once() {
        let now = Instant::now();
        let mut m = Membership::new(now, 1u8, Vec::new(), 5, Config::lan()).unwrap();
        let addrs = vec![Address(b"/ip4/127.0.0.1/tcp/1".to_vec())];
        assert_eq!(m.set_local_addrs(addrs.clone()), Ok(true));
        assert_eq!(m.incarnation(), 6);
        assert_eq!(m.local_addrs(), addrs.as_slice());
        assert_eq!(m.set_local_addrs(addrs), Ok(false));
        assert_eq!(m.incarnation(), 6);
        let too_many = vec![Address(vec![0]); crate::message::MAX_ADDRESSES + 1];
        assert!(m.set_local_addrs(too_many).is_err());
        assert_eq!(m.incarnation(), 6);
    }
}
