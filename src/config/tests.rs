//! The config file's parsing and checks.

use std::net::SocketAddr;

use super::*;
use crate::proxy::repository::RepositoryAddr;
use crate::proxy::repository::tls::RepositoryTlsMode;

#[test]
fn the_shipped_config_file_matches_the_defaults() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(DEFAULT_CONFIG_PATH);
    let (shipped, old_keys) =
        Config::parse_noting_old_keys(&std::fs::read_to_string(&path).unwrap(), &path)
            .expect("config/pgssl.toml loads");
    let defaults = Config::default();
    assert_eq!(format!("{shipped:?}"), format!("{defaults:?}"));
    assert_eq!(old_keys, [], "the documented example uses old key names");
}

#[test]
fn the_packaged_config_file_loads_without_old_keys() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/pgssl.toml");
    let (packaged, old_keys) =
        Config::parse_noting_old_keys(&std::fs::read_to_string(&path).unwrap(), &path)
            .expect("packaging/pgssl.toml loads");
    assert_eq!(old_keys, []);
    assert_eq!(
        packaged.server.listen,
        SocketAddr::from(([127, 0, 0, 1], 6432))
    );
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
    assert_eq!(tls.repository.tls, RepositoryTlsMode::VerifyCa);
    assert!(Config::parse("[repository]\ninternal_roles = [\"Bad-Name\"]\n", p).is_err());
    assert!(Config::parse("[repository]\ninternal_roles = [\"tableau\"]\n", p).is_err());
    assert!(Config::parse("[repository]\ninternal_roles = []\n", p).is_err());
}

#[test]
fn errors_name_the_file_and_the_key() {
    let p = Path::new("/etc/pgssl/x.toml");
    let message = |text: &str| Config::parse(text, p).unwrap_err().to_string();
    for (text, key) in [
        ("[server]\nlisten = \"nowhere\"\n", "server.listen"),
        ("[admin]\nlisten = \"localhost:1\"\n", "admin.listen"),
        (
            "[repository]\naddress = \"nowhere\"\n",
            "repository.address",
        ),
        (
            "[server]\nproxy_protocol_from = [\"x\"]\n",
            "server.proxy_protocol_from",
        ),
        (
            "[server]\nhandshake_timeout = 10\n",
            "server.handshake_timeout",
        ),
        ("[pool]\nidle_timeout = \"ten\"\n", "pool.idle_timeout"),
        (
            "[server]\nconnect_timeout = \"0s\"\n",
            "server.connect_timeout",
        ),
        ("[server]\nmax_connections = 0\n", "server.max_connections"),
        ("[auth]\nlockout_secs = \"5m\"\n", "auth.lockout_secs"),
    ] {
        let err = message(text);
        assert!(
            err.contains("config file /etc/pgssl/x.toml") && err.contains(key),
            "{text}: {err}"
        );
    }
    let err = message("[server]\nlisten = \n");
    assert!(err.contains("x.toml") && err.contains("line 2"), "{err}");
    let err = message("[server]\nhandshake_timeout = 10\n");
    assert!(err.contains("\"10s\""), "{err}");
}

#[test]
fn values_are_typed_as_the_file_is_read() {
    let p = Path::new("x.toml");
    let config = Config::parse(
        "[server]\nlisten = \"[::1]:6432\"\nhandshake_timeout = \"1m 30s\"\nshutdown_grace = \"250ms\"\nproxy_protocol_from = [\"10.0.0.0/8\", \"192.0.2.7\"]\n[repository]\naddress = \"unix:/run/postgresql\"\nport = 5433\ntls = \"disable\"\n[admin]\nlisten = \"0.0.0.0:8850\"\n[auth]\nverifier_cache_ttl = \"0s\"\n",
        p,
    )
    .unwrap();
    assert_eq!(config.server.listen, "[::1]:6432".parse().unwrap());
    assert_eq!(config.admin.listen, "0.0.0.0:8850".parse().unwrap());
    assert_eq!(config.handshake_timeout(), Duration::from_secs(90));
    assert_eq!(config.shutdown_grace(), Duration::from_millis(250));
    assert_eq!(config.auth.verifier_cache_ttl, Some(Duration::ZERO));
    assert_eq!(
        config.server.proxy_protocol_from,
        [
            network("10.0.0.0/8").unwrap(),
            network("192.0.2.7/32").unwrap()
        ]
    );
    let address = config.repository.address.unwrap();
    assert_eq!(
        address.upstreams(config.repository.port),
        [RepositoryAddr::Unix {
            dir: "/run/postgresql".into(),
            port: 5433
        }]
    );
}

#[test]
fn old_key_names_still_load_once_each_and_both_names_together_are_refused() {
    let p = Path::new("old.toml");
    let old = "[server]\nupstream = \"db:5432\"\nupstream_tls = \"require\"\nhandshake_timeout_secs = 7\nconnect_timeout_secs = 2\nshutdown_grace_secs = 3\n[admin]\nsession_idle_timeout_secs = 60\nrequest_timeout_secs = 4\n[auth]\nfailure_window_secs = 5\nlockout_secs = 6\nverifier_cache_secs = 8\n[pool]\nidle_timeout_secs = 9\nmax_lifetime_secs = 11\ncheckout_timeout_secs = 12\nrecheck_secs = 13\n";
    let (config, old_keys) = Config::parse_noting_old_keys(old, p).unwrap();
    let new = "[server]\nhandshake_timeout = \"7s\"\nconnect_timeout = \"2s\"\nshutdown_grace = \"3s\"\n[repository]\naddress = \"db:5432\"\ntls = \"require\"\n[admin]\nsession_idle_timeout = \"1m\"\nrequest_timeout = \"4s\"\n[auth]\nfailure_window = \"5s\"\nlockout = \"6s\"\nverifier_cache_ttl = \"8s\"\n[pool]\nidle_timeout = \"9s\"\nmax_lifetime = \"11s\"\ncheckout_timeout = \"12s\"\nrecheck_interval = \"13s\"\n";
    let (expected, none) = Config::parse_noting_old_keys(new, p).unwrap();
    assert_eq!(format!("{config:?}"), format!("{expected:?}"));
    assert_eq!(none, []);
    let mut names: Vec<_> = old_keys.iter().map(|k| k.old).collect();
    assert_eq!(names.len(), 14);
    names.dedup();
    assert_eq!(names.len(), 14, "one warning per key");
    assert!(old_keys.iter().all(|k| k.to_string().contains(k.new)));

    let err = Config::parse(
        "[server]\nhandshake_timeout_secs = 7\nhandshake_timeout = \"7s\"\n",
        p,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("old.toml")
            && err.contains(
                "server.handshake_timeout_secs and server.handshake_timeout are both set"
            ),
        "{err}"
    );
    let err = Config::parse(
        "[server]\nupstream = \"a:1\"\n[repository]\naddress = \"a:1\"\n",
        p,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("keep only repository.address"), "{err}");
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
