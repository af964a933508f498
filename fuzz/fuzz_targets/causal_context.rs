#![no_main]
// (placeholder: see the module's issue)
use libfuzzer_sys::fuzz_target;

fuzz_target!(|_data: &[u8]| {});
