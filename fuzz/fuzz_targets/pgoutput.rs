//! `pgoutput` messages as the old primary's slot hands them to the audit after a promotion
//! (`count_writes`): the input is cut into messages at each 0xFE byte.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let messages: Vec<(String, Vec<u8>)> = data
        .split(|b| *b == 0xFE)
        .map(|m| ("1".to_owned(), m.to_vec()))
        .collect();
    let audit = cutover::postgres::writers::count_writes(&messages, "cutover");
    let _ = audit.describe();
});
