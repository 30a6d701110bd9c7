//! Translation of [`Config`] into arti's `TorClientConfig`.

use arti_client::TorClientConfig;
use arti_client::config::CfgPath;
use arti_client::config::dir::FallbackDir;
use tor_config::ExplicitOrAuto;
use tor_keymgr::config::ArtiKeystoreKind;

use crate::config::{Config, ConfigError, Network, parse_ed_identity, parse_rsa_identity};

/// Builds arti's configuration. The keystore is always the in-memory one: the onion key is the
/// node key, which the caller already keeps, so arti never writes it to disk.
pub(crate) fn client_config(config: &Config) -> Result<TorClientConfig, ConfigError> {
    config.validate()?;
    let mut b = TorClientConfig::builder();
    if let Some(dir) = &config.state_dir {
        b.storage().state_dir(CfgPath::new_literal(dir.clone()));
    }
    if let Some(dir) = &config.cache_dir {
        b.storage().cache_dir(CfgPath::new_literal(dir.clone()));
    }
    if config.dangerous_trust_all_file_permissions {
        b.storage().permissions().dangerously_trust_everyone();
    }
    b.storage()
        .keystore()
        .primary()
        .kind(ExplicitOrAuto::Explicit(ArtiKeystoreKind::Ephemeral));
    b.circuit_timing()
        .hs_dir_requery_interval(config.hsdir_requery_interval);

    if let Network::Private(net) = &config.network {
        let v3idents = net
            .authority_v3idents
            .iter()
            .map(|id| parse_rsa_identity(id))
            .collect::<Result<Vec<_>, _>>()?;
        b.tor_network().authorities().set_v3idents(v3idents);
        let mut fallbacks = Vec::with_capacity(net.fallbacks.len());
        for fallback in &net.fallbacks {
            let mut fb = FallbackDir::builder();
            fb.rsa_identity(parse_rsa_identity(&fallback.rsa_identity)?)
                .ed_identity(parse_ed_identity(&fallback.ed_identity)?);
            for port in &fallback.orports {
                fb.orports().push(*port);
            }
            fallbacks.push(fb);
        }
        b.tor_network().set_fallback_caches(fallbacks);
        if let Some(minutes) = net.hsdir_interval_minutes {
            let minutes = i32::try_from(minutes.get()).unwrap_or(i32::MAX);
            b.override_net_params()
                .insert("hsdir_interval".into(), minutes);
        }
        if let Some(floor) = net.min_circuit_timeout {
            // In range: PrivateNetwork::validate checked it.
            let ms = i32::try_from(floor.as_millis()).unwrap_or(i32::MAX);
            b.override_net_params().insert("cbtmintimeout".into(), ms);
        }
        if net.dangerous_ignore_subnet_families {
            b.path_rules().ipv4_subnet_family_prefix(33);
            b.path_rules().ipv6_subnet_family_prefix(129);
        }
    }
    b.build().map_err(|e| ConfigError::Arti(e.to_string()))
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;
    use std::path::Path;

    use super::*;
    use crate::config::{Fallback, PrivateNetwork};

    #[test]
    fn public_and_private_configs_build() {
        client_config(&Config::default()).expect("public config builds");
        let net = PrivateNetwork {
            authority_v3idents: vec!["0123456789ABCDEF0123456789ABCDEF01234567".into()],
            fallbacks: vec![Fallback {
                rsa_identity: "89ABCDEF0123456789ABCDEF0123456789ABCDEF".into(),
                ed_identity: "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8".into(),
                orports: vec!["127.0.0.1:5000".parse().expect("socket address")],
            }],
            hsdir_interval_minutes: NonZeroU32::new(8),
            min_circuit_timeout: Some(std::time::Duration::from_secs(2)),
            dangerous_ignore_subnet_families: true,
        };
        client_config(&Config::private(net, Path::new("/tmp/shoal-tor-test")))
            .expect("private config builds");
    }
}
