//! Issue item 1: protocol header, connection.start properties, SASL, tune, heartbeats,
//! vhosts, connection and channel open/close/flow. Reply codes and texts are RabbitMQ
//! 3.10.8's, observed on a private node; each assertion says what RabbitMQ sent.

use std::time::{Duration, Instant};

use client_tests::raw::{
    table_get, Close, Enc, Field, Handshake, HandshakeError, Mechanism, RawClient, ReadError,
    FRAME_HEARTBEAT, PROTOCOL_HEADER,
};
use client_tests::*;
use lapin::options::ChannelFlowOptions;
use lapin::{Connection, ConnectionProperties};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_protocol_header_gets_0_9_1_header_and_close() {
    let broker = TestBroker::start();
    // RabbitMQ: writes `AMQP 0 0 9 1` and closes, for an older version, a newer revision and
    // for something that is not AMQP at all.
    for header in [
        &b"AMQP\x00\x00\x08\x00"[..],
        b"AMQP\x00\x00\x09\x02",
        b"GET / HTTP/1.1\r\n\r\n",
    ] {
        let mut c = RawClient::connect(broker.addr()).await;
        c.write_all(header).await;
        let answer = c
            .read_to_eof(DEADLINE)
            .await
            .unwrap_or_else(|e| panic!("after header {header:?}: {e}"));
        assert_eq!(answer, PROTOCOL_HEADER, "answer to header {header:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_start_and_tune_advertise_what_rabbitmq_does() {
    let broker = TestBroker::start();
    let c = RawClient::open(broker.addr()).await;
    let hello = &c.hello;
    assert_eq!((hello.version_major, hello.version_minor), (0, 9));

    let props = &hello.server_properties;
    let product = table_get(props, "product")
        .and_then(Field::as_str)
        .expect("product is a longstr");
    // Client libraries (and their test suites) recognise the broker by this name and pick
    // semantics by its version, as they would RabbitMQ's.
    assert_eq!(product, "RabbitMQ");
    for key in ["version", "platform"] {
        let v = table_get(props, key)
            .and_then(Field::as_str)
            .unwrap_or_else(|| panic!("server property {key} is a longstr"));
        assert!(!v.is_empty(), "server property {key} is empty");
    }
    let capabilities = table_get(props, "capabilities")
        .and_then(Field::as_table)
        .expect("capabilities table");
    // RabbitMQ 3.10 advertises exactly these, all true.
    for cap in [
        "publisher_confirms",
        "exchange_exchange_bindings",
        "basic.nack",
        "consumer_cancel_notify",
        "connection.blocked",
        "consumer_priorities",
        "authentication_failure_close",
        "per_consumer_qos",
        "direct_reply_to",
    ] {
        assert_eq!(
            table_get(capabilities, cap).and_then(Field::as_bool),
            Some(true),
            "capability {cap}"
        );
    }
    // RabbitMQ: mechanisms "PLAIN AMQPLAIN", locales "en_US".
    let mechanisms: Vec<&str> = hello.mechanisms.split(' ').collect();
    assert!(mechanisms.contains(&"PLAIN"), "{mechanisms:?}");
    assert!(mechanisms.contains(&"AMQPLAIN"), "{mechanisms:?}");
    assert!(hello.locales.split(' ').any(|l| l == "en_US"));
    // RabbitMQ defaults: channel_max 2047, frame_max 131072, heartbeat 60.
    assert_eq!(hello.tune_channel_max, 2047);
    assert_eq!(hello.tune_frame_max, 131_072);
    assert_eq!(hello.tune_heartbeat, 60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_and_amqplain_both_log_in() {
    let broker = TestBroker::start();
    // lapin speaks PLAIN by default and AMQPLAIN when asked in the URL.
    for url in [
        broker.amqp_url(),
        broker.amqp_url_with("auth_mechanism=amqplain"),
    ] {
        let conn = connect_url(&url).await;
        let ch = channel(&conn).await;
        declare_queue(&ch, "login").await;
        within("close", conn.close(200, "bye".into()))
            .await
            .expect("close");
    }
    // The same by hand, so the SASL decoding is checked independently of lapin.
    for mechanism in [Mechanism::Plain, Mechanism::AmqPlain] {
        let h = Handshake {
            mechanism,
            ..Handshake::default()
        };
        let mut c = RawClient::handshake(broker.addr(), &h)
            .await
            .unwrap_or_else(|e| panic!("{mechanism:?}: {e:?}"));
        c.open_channel(1).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_get_403_when_the_client_has_authentication_failure_close() {
    let broker = TestBroker::start();
    let cases = [
        ("guest", "wrong", Mechanism::Plain, "PLAIN"),
        ("nobody", "guest", Mechanism::Plain, "PLAIN"),
        ("guest", "wrong", Mechanism::AmqPlain, "AMQPLAIN"),
    ];
    for (username, password, mechanism, name) in cases {
        let h = Handshake {
            username: username.into(),
            password: password.into(),
            mechanism,
            ..Handshake::default()
        };
        match RawClient::handshake(broker.addr(), &h).await {
            // RabbitMQ: connection.close 403 "ACCESS_REFUSED - Login was refused using
            // authentication mechanism PLAIN. For details see the broker logfile." 0/0,
            // sent in place of connection.tune.
            Err(HandshakeError::Closed(close)) => assert_eq!(
                close,
                Close {
                    reply_code: 403,
                    reply_text: format!(
                        "ACCESS_REFUSED - Login was refused using authentication mechanism \
                         {name}. For details see the broker logfile."
                    ),
                    class_id: 0,
                    method_id: 0,
                },
                "{username}/{password} via {name}"
            ),
            other => panic!("{username}/{password} via {name}: expected 403 close, got {other:?}"),
        }
    }

    // lapin announces authentication_failure_close, so it sees the 403 too.
    let url = broker.amqp_url().replace("guest:guest@", "guest:wrong@");
    let err = within(
        "refused connect",
        Connection::connect(&url, ConnectionProperties::default()),
    )
    .await
    .expect_err("wrong password must not connect");
    assert_eq!(amqp_error(&err).map(|(code, _)| code), Some(403), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_without_the_capability_just_close_the_socket() {
    let broker = TestBroker::start();
    let h = Handshake {
        password: "wrong".into(),
        authentication_failure_close: false,
        ..Handshake::default()
    };
    // RabbitMQ: no connection.close at all, the socket is closed (after a short delay).
    match RawClient::handshake(broker.addr(), &h).await {
        Err(HandshakeError::Read(ReadError::Eof)) => {}
        other => panic!("expected the socket to close, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_mechanism_or_garbage_response_closes_the_socket() {
    let broker = TestBroker::start();
    // RabbitMQ logs "unknown authentication mechanism 'FOO'" (or "response <<...>> invalid"
    // for a PLAIN response without NULs) and closes the socket without connection.close.
    for (mechanism, response) in [("FOO", &b"\0guest\0guest"[..]), ("PLAIN", b"garbage")] {
        let mut c = RawClient::connect(broker.addr()).await;
        c.write_all(PROTOCOL_HEADER).await;
        c.expect_method(0, 10, 10).await;
        let start_ok = Enc::new()
            .empty_table()
            .shortstr(mechanism)
            .longstr(response)
            .shortstr("en_US")
            .done();
        c.send_method(0, 10, 11, &start_ok).await;
        let frames = c.expect_eof(DEADLINE).await;
        assert!(
            frames.iter().all(|f| !f.is_method(10, 30)),
            "{mechanism}: must not be tuned: {frames:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_vhost_is_530_not_allowed() {
    let broker = TestBroker::start();
    let vhost = unique("no-such-vhost");
    let h = Handshake {
        vhost: vhost.clone(),
        ..Handshake::default()
    };
    match RawClient::handshake(broker.addr(), &h).await {
        // RabbitMQ: 530 "NOT_ALLOWED - vhost X not found", class 10 method 40.
        Err(HandshakeError::Closed(close)) => assert_eq!(
            close,
            Close {
                reply_code: 530,
                reply_text: format!("NOT_ALLOWED - vhost {vhost} not found"),
                class_id: 10,
                method_id: 40,
            }
        ),
        other => panic!("expected 530, got {other:?}"),
    }

    let url = broker.amqp_url().replace("/%2f", &format!("/{vhost}"));
    let err = within(
        "connect to unknown vhost",
        Connection::connect(&url, ConnectionProperties::default()),
    )
    .await
    .expect_err("unknown vhost must not connect");
    assert_eq!(amqp_error(&err).map(|(code, _)| code), Some(530), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tune_ok_values_are_honoured_by_lapin_and_by_hand() {
    let broker = TestBroker::start();
    let conn =
        connect_url(&broker.amqp_url_with("frame_max=8192&channel_max=16&heartbeat=5")).await;
    let cfg = conn.configuration();
    assert_eq!(cfg.frame_max(), 8192);
    assert_eq!(cfg.channel_max(), 16);
    assert_eq!(cfg.heartbeat(), 5);
    let ch = channel(&conn).await;
    declare_queue(&ch, "tuned").await;

    // A client may lower channel_max; opening more channels than that is refused.
    let h = Handshake {
        channel_max: Some(2),
        ..Handshake::default()
    };
    let mut c = RawClient::handshake(broker.addr(), &h)
        .await
        .expect("handshake");
    c.open_channel(1).await;
    c.open_channel(2).await;
    c.send_method(3, 20, 10, &Enc::new().shortstr("").done())
        .await;
    // RabbitMQ: 530 "NOT_ALLOWED - number of channels opened (2) has reached the negotiated
    // channel_max (2)", class 0 method 0. (RabbitMQ counts open channels, it does not
    // compare the channel number.)
    assert_eq!(
        c.expect_connection_close().await,
        Close {
            reply_code: 530,
            reply_text: "NOT_ALLOWED - number of channels opened (2) has reached the \
                         negotiated channel_max (2)"
                .into(),
            class_id: 0,
            method_id: 0,
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tune_ok_outside_the_limits_is_refused() {
    let broker = TestBroker::start();
    // RabbitMQ logs "failed to negotiate connection parameters: negotiated frame_max = 200000
    // is higher than the maximum allowed value (131072)" (likewise "lower than the minimum
    // allowed value (4096)", "channel_max = 5000 is higher than the maximum allowed value
    // (2047)", and frame_max 0 counts as higher than the maximum) and closes the socket
    // without connection.close. A 530 connection.close first is accepted too.
    let cases = [
        Handshake {
            frame_max: Some(200_000),
            ..Handshake::default()
        },
        Handshake {
            frame_max: Some(1000),
            ..Handshake::default()
        },
        Handshake {
            frame_max: Some(0),
            ..Handshake::default()
        },
        Handshake {
            channel_max: Some(5000),
            ..Handshake::default()
        },
    ];
    for h in cases {
        match RawClient::handshake(broker.addr(), &h).await {
            Err(HandshakeError::Read(ReadError::Eof)) => {}
            Err(HandshakeError::Closed(close)) => {
                assert_eq!(close.reply_code, 530, "{h:?}: {close:?}")
            }
            Ok(_) => panic!("{h:?}: connection accepted"),
            Err(e) => panic!("{h:?}: {e:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_client_is_disconnected_after_missed_heartbeats() {
    let broker = TestBroker::start();
    let h = Handshake {
        heartbeat: Some(1),
        ..Handshake::default()
    };
    let started = Instant::now();
    let mut c = RawClient::handshake(broker.addr(), &h)
        .await
        .expect("handshake");
    // RabbitMQ (heartbeat=1): a heartbeat frame every 0.5 s, then after ~3 s of silence it
    // closes the socket (a reset), with no connection.close.
    let frames = c.expect_eof(Duration::from_secs(8)).await;
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(1500),
        "disconnected after {elapsed:?}: sooner than two heartbeat intervals"
    );
    assert!(
        frames.iter().any(|f| f.frame_type == FRAME_HEARTBEAT),
        "no heartbeat from the server before it gave up: {frames:?}"
    );
    assert!(
        frames
            .iter()
            .all(|f| f.frame_type == FRAME_HEARTBEAT || f.is_method(10, 50)),
        "unexpected frames: {frames:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_client_gets_heartbeats_and_stays_connected() {
    let broker = TestBroker::start();
    let h = Handshake {
        heartbeat: Some(1),
        ..Handshake::default()
    };
    let mut c = RawClient::handshake(broker.addr(), &h)
        .await
        .expect("handshake");
    let until = Instant::now() + Duration::from_millis(3500);
    let mut tick = tokio::time::interval(Duration::from_millis(400));
    let mut received = 0;
    while Instant::now() < until {
        tick.tick().await;
        c.send_heartbeat().await;
        while let Ok(f) = c.read_frame_within(Duration::from_millis(1)).await {
            assert_eq!(f.frame_type, FRAME_HEARTBEAT, "{f:?}");
            assert_eq!((f.channel, f.payload.len()), (0, 0), "{f:?}");
            received += 1;
        }
    }
    // RabbitMQ sends one every 0.5 s with heartbeat=1; at least one per interval is required.
    assert!(received >= 3, "only {received} heartbeats in 3.5 s");
    c.open_channel(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_proposes_its_configured_heartbeat_and_frame_max() {
    let broker = TestBroker::start_with(|cfg| {
        cfg.heartbeat_secs = 1;
        cfg.frame_max_bytes = 16_384;
        cfg.channel_max = 64;
    });
    if broker.is_external() {
        skip(
            "server_proposes_its_configured_heartbeat_and_frame_max",
            "needs the in-process broker's config",
        );
        return;
    }
    let c = RawClient::open(broker.addr()).await;
    assert_eq!(c.hello.tune_heartbeat, 1);
    assert_eq!(c.hello.tune_frame_max, 16_384);
    assert_eq!(c.hello.tune_channel_max, 64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_close_gets_close_ok_then_the_socket_closes() {
    let broker = TestBroker::start();
    let mut c = RawClient::open(broker.addr()).await;
    c.open_channel(1).await;
    let close = Enc::new().u16(200).shortstr("bye").u16(0).u16(0).done();
    c.send_method(0, 10, 50, &close).await;
    c.expect_method(0, 10, 51).await;
    // RabbitMQ leaves closing the TCP connection to the client after close-ok, so only
    // the reply is required here, and that nothing else follows it.
    match c.read_frame_within(Duration::from_millis(300)).await {
        Err(ReadError::Eof) | Err(ReadError::Timeout) => {}
        other => panic!("after close-ok: {other:?}"),
    }

    // lapin's orderly close.
    let (conn, _ch) = open(&broker).await;
    within("connection.close", conn.close(200, "bye".into()))
        .await
        .expect("close");
    // lapin resolves close() on close-ok and marks the status closed right after.
    eventually("lapin sees the connection closed", || {
        let closed = conn.status().closed();
        async move { closed }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_open_close_and_flow() {
    let broker = TestBroker::start();
    let conn = connect(&broker).await;
    let a = channel(&conn).await;
    let b = channel(&conn).await;
    assert_ne!(a.id(), b.id());
    // RabbitMQ answers channel.flow active=true with flow-ok active=true.
    let active = within(
        "channel.flow",
        a.channel_flow(ChannelFlowOptions { active: true }),
    )
    .await
    .expect("flow");
    assert!(active);
    within("channel.close", a.close(200, "done".into()))
        .await
        .expect("channel.close");
    // The other channel is unaffected.
    declare_queue(&b, "after-close").await;
    assert!(
        within("qos on closed channel", a.basic_qos(1, Default::default()))
            .await
            .is_err()
    );

    // Closing and reopening the same channel number by hand.
    let mut c = RawClient::open(broker.addr()).await;
    c.open_channel(1).await;
    let close = Enc::new().u16(200).shortstr("bye").u16(0).u16(0).done();
    c.send_method(1, 20, 40, &close).await;
    c.expect_method(1, 20, 41).await;
    c.open_channel(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_flow_active_false_is_540_not_implemented() {
    let broker = TestBroker::start();
    let mut c = RawClient::open(broker.addr()).await;
    c.open_channel(1).await;
    c.send_method(1, 20, 20, &Enc::new().bits(&[false]).done())
        .await;
    // RabbitMQ: connection.close 540 "NOT_IMPLEMENTED - active=false", class 20 method 20.
    assert_eq!(
        c.expect_connection_close().await,
        Close {
            reply_code: 540,
            reply_text: "NOT_IMPLEMENTED - active=false".into(),
            class_id: 20,
            method_id: 20,
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_channel_open_on_an_open_channel_is_504() {
    let broker = TestBroker::start();
    let mut c = RawClient::open(broker.addr()).await;
    c.open_channel(1).await;
    c.send_method(1, 20, 10, &Enc::new().shortstr("").done())
        .await;
    // RabbitMQ: connection.close 504 "CHANNEL_ERROR - second 'channel.open' seen", 20/10.
    assert_eq!(
        c.expect_connection_close().await,
        Close {
            reply_code: 504,
            reply_text: "CHANNEL_ERROR - second 'channel.open' seen".into(),
            class_id: 20,
            method_id: 10,
        }
    );
}
