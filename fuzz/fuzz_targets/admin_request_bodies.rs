//! Every body the admin API reads: never a panic, whatever the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgssl::admin::requests::parse_as_every_request;

fuzz_target!(|data: &[u8]| {
    parse_as_every_request(data);
});
