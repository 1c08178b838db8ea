//! The soak (benches/soak.sh), bounded: pgbench through pgssl (persistent TLS sessions and a new
//! TLS + SCRAM login per transaction) while repository SSL is changed and applied every 5 s and the
//! certificate and internal passwords are rotated every 15 s. Zero failed transactions, zero failed
//! control commands. The 30-minute run with the flatness check is by hand (README, Soak).

#[test]
fn pgbench_through_pgssl_loses_nothing_while_changes_are_applied_and_rotated() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/soak.sh");
    let out_dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(script)
        .env("PGSSL_BIN", env!("CARGO_BIN_EXE_pgssl"))
        .env("OUT", out_dir.path())
        .env("SOAK_SECONDS", "40")
        .env("APPLY_EVERY", "5")
        .env("ROTATE_EVERY", "15")
        .env("WARMUP", "10")
        .env("SAMPLE_EVERY", "2")
        .output()
        .expect("benches/soak.sh runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let line = |prefix: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no '{prefix}' line:\n{stdout}\n{stderr}"))
            .to_string()
    };
    let number_before = |line: &str, word: &str| -> u64 {
        let words: Vec<&str> = line
            .split([' ', ',', ':'])
            .filter(|w| !w.is_empty())
            .collect();
        let at = words.iter().position(|w| *w == word).unwrap();
        words[at - 1].parse().unwrap()
    };
    for load in ["persistent", "connect"] {
        let l = line(load);
        assert!(number_before(&l, "transactions") > 0, "{l}");
        assert_eq!(number_before(&l, "failed"), 0, "{l}");
    }
    let control = line("applies:");
    let words: Vec<u64> = control
        .split([' ', ','])
        .filter_map(|w| w.parse().ok())
        .collect();
    // applies, rotations, failed control commands
    assert!(words[0] >= 5 && words[1] >= 2 && words[2] == 0, "{control}");
}
