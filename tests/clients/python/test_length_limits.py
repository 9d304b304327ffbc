"""Issue 5, item 3 with pika: length limits (x-max-length, x-max-length-bytes) with each
x-overflow mode, and what becomes of the messages they turn away: drop-head and
reject-publish-dlx dead-letter them (reason maxlen), reject-publish only nacks."""

import pika
import pytest

from helpers import unique, wait_until


def get_one(channel, queue):
    return wait_until(
        lambda: (lambda r: r if r[0] else None)(channel.basic_get(queue, auto_ack=True)),
        what=f"a message in {queue}",
    )


def limited_queue(channel, cleanup, **arguments):
    dlq = cleanup.queue(unique("maxlen-dlq"))
    channel.queue_declare(dlq)
    queue = cleanup.queue(unique("maxlen"))
    channel.queue_declare(
        queue,
        arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq, **arguments},
    )
    return queue, dlq


def bodies(channel, queue):
    out = []
    while True:
        _, _, body = channel.basic_get(queue, auto_ack=True)
        if body is None:
            return out
        out.append(body)


@pytest.mark.parametrize(
    "limit", [{"x-max-length": 2}, {"x-max-length-bytes": 4}], ids=["count", "bytes"]
)
def test_drop_head_dead_letters_the_oldest(channel, cleanup, limit):
    queue, dlq = limited_queue(channel, cleanup, **limit)
    for body in (b"m1", b"m2", b"m3"):
        channel.basic_publish("", queue, body)
    _, properties, body = get_one(channel, dlq)
    assert body == b"m1"
    (death,) = properties.headers["x-death"]
    assert (death["reason"], death["queue"]) == ("maxlen", queue)
    assert properties.headers["x-first-death-reason"] == "maxlen"
    assert bodies(channel, queue) == [b"m2", b"m3"]


def test_reject_publish_dlx_nacks_and_dead_letters(channel, cleanup):
    queue, dlq = limited_queue(
        channel, cleanup, **{"x-max-length": 1, "x-overflow": "reject-publish-dlx"}
    )
    channel.confirm_delivery()
    channel.basic_publish("", queue, b"kept")
    with pytest.raises(pika.exceptions.NackError):
        channel.basic_publish("", queue, b"refused")
    _, properties, body = get_one(channel, dlq)
    assert body == b"refused"
    (death,) = properties.headers["x-death"]
    assert (death["reason"], death["queue"], death["count"]) == ("maxlen", queue, 1)
    assert bodies(channel, queue) == [b"kept"]


def test_reject_publish_nacks_without_dead_lettering(channel, cleanup):
    queue, dlq = limited_queue(
        channel, cleanup, **{"x-max-length": 1, "x-overflow": "reject-publish"}
    )
    channel.confirm_delivery()
    channel.basic_publish("", queue, b"kept")
    with pytest.raises(pika.exceptions.NackError):
        channel.basic_publish("", queue, b"refused")
    # A rejection afterwards is dead-lettered; had the refused publish been, it came first.
    method, _, _ = channel.basic_get(queue)
    channel.basic_reject(method.delivery_tag, requeue=False)
    _, properties, body = get_one(channel, dlq)
    assert body == b"kept"
    assert properties.headers["x-death"][0]["reason"] == "rejected"
    assert channel.basic_get(dlq, auto_ack=True) == (None, None, None)


def test_invalid_overflow_is_refused_as_rabbitmq_does(conn):
    for arguments, detail in [
        ({"x-overflow": "foo"}, "invalid_overflow"),
        ({"x-overflow": 5}, "{unacceptable_type,signedint}"),
        ({"x-max-length": -1}, "{value_negative,-1}"),
        ({"x-max-length": "abc"}, '"expected integer, got longstr"'),
    ]:
        channel = conn.channel()
        queue = unique("maxlen-invalid")
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as excinfo:
            channel.queue_declare(queue, arguments=arguments)
        arg = next(iter(arguments))
        assert excinfo.value.reply_text == (
            f"PRECONDITION_FAILED - invalid arg '{arg}' for queue '{queue}' in vhost '/': {detail}"
        )
