//! Issue item 7: direct reply-to (`amq.rabbitmq.reply-to`), RPC without a reply queue.
//! Codes and texts are RabbitMQ 3.10.8's.

use client_tests::*;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection};

const REPLY_TO: &str = "amq.rabbitmq.reply-to";

fn no_ack() -> BasicConsumeOptions {
    BasicConsumeOptions {
        no_ack: true,
        ..BasicConsumeOptions::default()
    }
}

/// Serves `requests` requests from `queue`: replies with the request body reversed, to the
/// request's reply_to, echoing its correlation_id.
async fn serve(conn: &Connection, queue: &str, requests: usize) {
    let ch = channel(conn).await;
    let mut consumer = consume(&ch, queue, true).await;
    for _ in 0..requests {
        let request = next_delivery(&mut consumer).await;
        let reply_to = request
            .properties
            .reply_to()
            .clone()
            .expect("request has reply_to");
        let mut body = request.data.clone();
        body.reverse();
        let mut props = BasicProperties::default();
        if let Some(id) = request.properties.correlation_id() {
            props = props.with_correlation_id(id.clone());
        }
        publish_with(
            &ch,
            "",
            reply_to.as_str(),
            BasicPublishOptions::default(),
            props,
            &body,
        )
        .await;
    }
}

async fn reply_consumer(ch: &Channel) -> lapin::Consumer {
    within(
        "consume reply-to",
        ch.basic_consume(REPLY_TO.into(), "".into(), no_ack(), FieldTable::default()),
    )
    .await
    .expect("consume amq.rabbitmq.reply-to")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_over_direct_reply_to() {
    let broker = TestBroker::start();
    let server_conn = connect(&broker).await;
    let setup = channel(&server_conn).await;
    let rpc_queue = declare_queue(&setup, "rpc").await;

    let client_conn = connect(&broker).await;
    let ch = channel(&client_conn).await;
    let mut replies = reply_consumer(&ch).await;

    let server = serve(&server_conn, &rpc_queue, 1);
    let client = async {
        publish_with(
            &ch,
            "",
            &rpc_queue,
            BasicPublishOptions::default(),
            BasicProperties::default()
                .with_reply_to(REPLY_TO.into())
                .with_correlation_id("c-1".into()),
            b"ping",
        )
        .await;
        next_delivery(&mut replies).await
    };
    let ((), reply) = tokio::join!(server, client);
    assert_eq!(reply.data, b"gnip");
    assert_eq!(
        reply
            .properties
            .correlation_id()
            .as_ref()
            .map(|s| s.as_str()),
        Some("c-1")
    );
    assert_eq!(reply.exchange.as_str(), "");
    // RabbitMQ rewrites reply_to into "amq.rabbitmq.reply-to.<opaque token>" and delivers
    // the reply with that routing key.
    let key = reply.routing_key.as_str();
    assert!(key.starts_with("amq.rabbitmq.reply-to."), "{key}");
    assert!(key.len() > REPLY_TO.len() + 1, "{key}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_clients_each_get_only_their_replies() {
    let broker = TestBroker::start();
    let server_conn = connect(&broker).await;
    let setup = channel(&server_conn).await;
    let rpc_queue = declare_queue(&setup, "rpc-many").await;
    const CLIENTS: usize = 4;
    const CALLS: usize = 5;
    let server = serve(&server_conn, &rpc_queue, CLIENTS * CALLS);

    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let url = broker.amqp_url();
        let rpc_queue = rpc_queue.clone();
        clients.push(tokio::spawn(async move {
            let conn = connect_url(&url).await;
            let ch = channel(&conn).await;
            let mut replies = reply_consumer(&ch).await;
            for call in 0..CALLS {
                let id = format!("client{c}-call{call}");
                publish_with(
                    &ch,
                    "",
                    &rpc_queue,
                    BasicPublishOptions::default(),
                    BasicProperties::default()
                        .with_reply_to(REPLY_TO.into())
                        .with_correlation_id(id.as_str().into()),
                    id.as_bytes(),
                )
                .await;
                let reply = next_delivery(&mut replies).await;
                assert_eq!(
                    reply
                        .properties
                        .correlation_id()
                        .as_ref()
                        .map(|s| s.to_string()),
                    Some(id.clone())
                );
                let mut expected = id.into_bytes();
                expected.reverse();
                assert_eq!(reply.data, expected);
            }
        }));
    }
    let clients_done = async {
        for handle in clients {
            handle.await.expect("client task");
        }
    };
    within("all RPCs", futures_lite::future::zip(server, clients_done)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_to_misuse_is_refused_like_rabbitmq() {
    let broker = TestBroker::start();
    let conn = connect(&broker).await;
    let setup = channel(&conn).await;
    let q = declare_queue(&setup, "rpc-misuse").await;

    // Publishing with reply_to = amq.rabbitmq.reply-to before consuming from it: RabbitMQ
    // channel.close 406 "PRECONDITION_FAILED - fast reply consumer does not exist" (60/40).
    let ch = channel(&conn).await;
    let watch = CloseWatch::on(&ch).await;
    let _ = within(
        "publish",
        ch.basic_publish(
            "".into(),
            q.as_str().into(),
            BasicPublishOptions::default(),
            b"x",
            BasicProperties::default().with_reply_to(REPLY_TO.into()),
        ),
    )
    .await;
    assert_eq!(
        watch.reason().await,
        (
            406,
            "PRECONDITION_FAILED - fast reply consumer does not exist".into()
        )
    );

    // Consuming with acks: RabbitMQ 406 "PRECONDITION_FAILED - reply consumer cannot
    // acknowledge" (60/20).
    let ch = channel(&conn).await;
    let res = within(
        "consume with acks",
        ch.basic_consume(
            REPLY_TO.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        ),
    )
    .await;
    assert_eq!(
        expect_amqp_error(res),
        (
            406,
            "PRECONDITION_FAILED - reply consumer cannot acknowledge".into()
        )
    );

    // A passive declare of the pseudo-queue succeeds.
    let ch = channel(&conn).await;
    let declared = within(
        "passive declare",
        ch.queue_declare(
            REPLY_TO.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        ),
    )
    .await
    .expect("passive declare of amq.rabbitmq.reply-to");
    // RabbitMQ: declare-ok with message_count 0 and consumer_count 1.
    assert_eq!(
        (declared.message_count(), declared.consumer_count()),
        (0, 1)
    );

    // A reply to a token nobody holds is dropped without closing the channel.
    publish(
        &ch,
        "",
        "amq.rabbitmq.reply-to.bm8tb25lLWhvbGRzLXRoaXM",
        b"lost",
    )
    .await;
    declare_queue(&ch, "still-open").await;
}
