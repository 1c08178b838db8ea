//! Every body the admin API reads: never a panic, whatever the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgssl::admin::requests::*;

fuzz_target!(|data: &[u8]| {
    let _ = parse::<SignIn>(data);
    let _ = parse::<NoArguments>(data);
    let _ = parse::<RepositorySslEnable>(data);
    let _ = parse::<RegenerateTokens>(data);
    let _ = parse::<DataAccessEnable>(data);
    let _ = parse::<DataAccessDisable>(data);
    let _ = parse::<ExternalSslEnable>(data);
    let _ = parse::<CustomCertAdd>(data);
    let _ = parse::<ExtsvcEnable>(data);
});
