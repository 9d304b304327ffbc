"""Stand-alone pika clients the tests run as child processes (so one can be SIGKILLed with
its socket). They report what they did as lines on stdout; they decide nothing about
pass or fail.

    procs.py worker URL QUEUE DELAY_S   ack each message after DELAY_S of "work"
    procs.py hold URL QUEUE             take messages (prefetch 1) and never ack them
"""

import sys
import time

import pika

# An orphaned child must not outlive a crashed test run for long.
MAX_LIFETIME_S = 60.0


def say(*parts):
    print(*parts, flush=True)


def run(mode, url, queue, delay_s):
    params = pika.URLParameters(url)
    params.socket_timeout = 5
    params.stack_timeout = 8
    connection = pika.BlockingConnection(params)
    channel = connection.channel()
    channel.queue_declare(queue, durable=True)
    channel.basic_qos(prefetch_count=1)

    def on_message(ch, method, properties, body):
        if mode == "worker":
            if delay_s > 0:
                time.sleep(delay_s)  # the simulated workload, not a synchronisation wait
            ch.basic_ack(method.delivery_tag)
            say("DONE", body.decode(), method.redelivered, properties.delivery_mode)
        else:
            say("GOT", body.decode(), method.redelivered)

    channel.basic_consume(queue, on_message, auto_ack=False)
    say("READY")
    deadline = time.monotonic() + MAX_LIFETIME_S
    while time.monotonic() < deadline:
        connection.process_data_events(time_limit=0.2)
    connection.close()


def main(argv):
    mode = argv[1]
    if mode == "worker":
        run(mode, argv[2], argv[3], float(argv[4]))
    elif mode == "hold":
        run(mode, argv[2], argv[3], 0.0)
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv)
