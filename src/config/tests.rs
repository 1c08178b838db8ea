//! The config file's parsing and checks.

use super::*;

#[test]
fn the_shipped_config_file_matches_the_defaults() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(DEFAULT_CONFIG_PATH);
    let shipped = Config::load(&path, true).expect("config/pgssl.toml loads");
    let defaults = Config::default();
    assert_eq!(format!("{shipped:?}"), format!("{defaults:?}"));
}

#[test]
fn refuses_unknown_keys_and_bad_values() {
    let p = Path::new("x.toml");
    let err = Config::parse("[server]\nlisten_addr = \"x\"\n", p).unwrap_err();
    assert!(err.to_string().contains("listen_addr"), "{err}");
    assert!(Config::parse("[server]\nmax_connections = 0\n", p).is_err());
    let err = Config::parse("[server]\nproxy_protocol_from = [\"10.0.0.0/99\"]\n", p).unwrap_err();
    assert!(err.to_string().contains("proxy_protocol_from"), "{err}");
    assert!(Config::parse("[server]\nlisten = \"nowhere\"\n", p).is_err());
    assert!(Config::parse("[server]\nupstream = \"nowhere\"\n", p).is_err());
    assert!(Config::parse("[repository]\npostgres_major = 9\n", p).is_err());
    let err = Config::parse("[server]\nupstream_tls = \"prefer\"\n", p).unwrap_err();
    assert!(err.to_string().contains("verify-full"), "{err}");
    let tls = Config::parse("[server]\nupstream_tls = \"verify-ca\"\n", p).unwrap();
    assert_eq!(tls.server.upstream_tls, UpstreamTlsMode::VerifyCa);
    assert!(Config::parse("[repository]\ninternal_roles = [\"Bad-Name\"]\n", p).is_err());
    assert!(Config::parse("[repository]\ninternal_roles = [\"tableau\"]\n", p).is_err());
    assert!(Config::parse("[repository]\ninternal_roles = []\n", p).is_err());
}

#[test]
fn a_missing_default_file_means_defaults_but_a_named_one_is_an_error() {
    let p = Path::new("/nonexistent/pgssl.toml");
    assert!(Config::load(p, false).is_ok());
    assert!(matches!(
        Config::load(p, true),
        Err(ConfigError::Read { .. })
    ));
}
