//! What servers and tools print back: rsync's statistics and progress, a MySQL/MariaDB version
//! string, a MariaDB GTID list.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = cutover::files::rsync::parse_stats(&text);
    for line in text.lines() {
        let _ = cutover::files::rsync::parse_progress(line);
    }
    let _ = cutover::mysql::dialect::parse_version(&text);
    let _ = cutover::mysql::cutover::gtid_sequences(&text);
        let _ = cutover::mysql::cutover::gtid_count(&cutover::mysql::cutover::gtid_set(&text));
});
