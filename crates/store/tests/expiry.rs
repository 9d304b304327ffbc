//! Expiries kept with messages: what `append_expiring` records comes back at recovery with
//! the message, and messages appended without one come back without one.

mod common;

use common::*;
use store::{LogConfig, MemStorage, Syncer};

#[test]
fn an_expiry_comes_back_with_its_message_after_a_restart() {
    let s = MemStorage::new();
    let syncer = Syncer::start().unwrap();
    let (mut log, _) = open(&s, &syncer, small_segments());
    let rk = routing_key(1);
    let b = body(1);
    let expiring = log
        .append_expiring(
            1,
            true,
            Some(1_700_000_000_123),
            &[b"amq.direct", &rk, b"\x90\x00", &b],
        )
        .unwrap();
    append(&mut log, 2, true);
    assert_eq!(
        log.read(expiring).unwrap().expires_at(),
        Some(1_700_000_000_123)
    );
    log.close().unwrap();

    let (mut log, recovered) = open(&s, &syncer, LogConfig::default());
    assert_eq!(ids(&recovered), vec![1, 2]);
    let expiries: Vec<_> = recovered.messages.iter().map(|m| m.expires_at).collect();
    assert_eq!(expiries, vec![Some(1_700_000_000_123), None]);
    verify_all(&mut log, &recovered);
}
