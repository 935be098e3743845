#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| peerix::fuzzing::http_requests(data));
