#!/usr/bin/env python3
"""An Offload peer written only from docs/protocol.md: a worker for the kind `py.reverse`
(queue `py`) and a producer that publishes a job straight to the jobs exchange.

It follows the RabbitMQ "Work Queues" tutorial: prefetch 1, manual acks, and it acknowledges a
job only after the broker confirmed the job's outcome event.

    offload_peer.py worker [NAME]     run the worker until SIGTERM / SIGINT
    offload_peer.py publish KIND JSON publish one job envelope, print its id

Settings come from the same environment variables as the Rust binaries: OFFLOAD_AMQP_URL,
OFFLOAD_QUEUE_PREFIX, OFFLOAD_QUEUE_TYPE, OFFLOAD_DELIVERY_LIMIT, OFFLOAD_RETRY_BASE_MS,
OFFLOAD_WORKER_HEARTBEAT_S.
"""

import json
import os
import signal
import sys
import time
import uuid
from datetime import datetime, timezone

import pika

KIND = "py.reverse"
QUEUE = "py"
SCHEMA = {
    "type": "object",
    "properties": {
        "text": {"type": "string", "maxLength": 10000},
        "fail": {"enum": ["permanent", "once"]},
    },
    "required": ["text"],
    "additionalProperties": False,
}

AMQP_URL = os.environ.get("OFFLOAD_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")
PREFIX = os.environ.get("OFFLOAD_QUEUE_PREFIX", "offload")
QUEUE_TYPE = os.environ.get("OFFLOAD_QUEUE_TYPE", "quorum")
DELIVERY_LIMIT = int(os.environ.get("OFFLOAD_DELIVERY_LIMIT", "10"))
RETRY_BASE_MS = int(os.environ.get("OFFLOAD_RETRY_BASE_MS", "1000"))
HEARTBEAT_S = int(os.environ.get("OFFLOAD_WORKER_HEARTBEAT_S", "10"))

JOBS_EXCHANGE = f"{PREFIX}.jobs"
DEAD_EXCHANGE = f"{PREFIX}.dead"
DELAY_EXCHANGE = f"{PREFIX}.delay"
EVENTS_QUEUE = f"{PREFIX}.events"
WORKERS_QUEUE = f"{PREFIX}.workers"
WORK_QUEUE = f"{PREFIX}.jobs" if QUEUE == "default" else f"{PREFIX}.jobs.{QUEUE}"
# Its high lane: high jobs wait there (protocol section 1, priorities).
HIGH_LANE = f"{WORK_QUEUE}:high"


def now():
    return datetime.now(timezone.utc).isoformat()


def uuid7():
    """A UUID v7 (time-ordered), as protocol.md asks of job ids."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | (rand >> 68) << 64 | 0b10 << 62
    value |= rand & ((1 << 62) - 1)
    return str(uuid.UUID(int=value))


def connect():
    params = pika.URLParameters(AMQP_URL)
    params.heartbeat = 10
    connection = pika.BlockingConnection(params)
    channel = connection.channel()
    # Every publish below waits for the broker's confirm; an unroutable mandatory publish raises.
    channel.confirm_delivery()
    return connection, channel


def work_queue_arguments():
    """The arguments of protocol.md, "Work queues": the same the Rust binaries declare."""
    args = {"x-queue-type": QUEUE_TYPE, "x-dead-letter-exchange": DEAD_EXCHANGE}
    if QUEUE_TYPE == "quorum":
        args["x-delivery-limit"] = DELIVERY_LIMIT
        args["x-dead-letter-strategy"] = "at-least-once"
        args["x-overflow"] = "reject-publish"
    return args


class Worker:
    def __init__(self, name):
        self.name = name
        self.started_at = now()
        self.in_flight = 0
        self.stopping = False
        self.connection, self.channel = connect()

    # -- announcements -------------------------------------------------------------------
    def announce(self, state="alive"):
        body = {
            "v": 1,
            "worker": self.name,
            "state": state,
            "kinds": [{"name": KIND, "queue": QUEUE, "payload_schema": SCHEMA, "max_attempts": 3}],
            "queues": [QUEUE],
            "in_flight": self.in_flight,
            "prefetch": 1,
            "heartbeat_s": HEARTBEAT_S,
            "started_at": self.started_at,
            "at": now(),
            "software": f"python-pika {pika.__version__}",
        }
        self.channel.basic_publish(
            exchange="",
            routing_key=WORKERS_QUEUE,
            body=json.dumps(body).encode(),
            properties=pika.BasicProperties(
                content_type="application/json", type="offload.announcement", delivery_mode=1
            ),
            mandatory=True,
        )

    def heartbeat(self):
        if self.stopping:
            return
        self.announce()
        self.connection.call_later(HEARTBEAT_S, self.heartbeat)

    # -- publishing ----------------------------------------------------------------------
    def event(self, envelope, status, **extra):
        event = {
            "v": 1,
            "job_id": envelope["id"],
            "attempt": envelope["attempt"],
            "status": status,
            "at": now(),
            "worker": self.name,
            "kind": envelope["kind"],
        }
        event.update({k: v for k, v in extra.items() if v is not None})
        self.channel.basic_publish(
            exchange="",
            routing_key=EVENTS_QUEUE,
            body=json.dumps([event]).encode(),
            properties=pika.BasicProperties(content_type="application/json", delivery_mode=2),
            mandatory=True,
        )

    def dead_letter(self, method, properties, body, reason):
        headers = dict(properties.headers or {})
        headers["x-offload-reason"] = reason
        headers["x-offload-worker"] = self.name
        self.channel.basic_publish(
            exchange=DEAD_EXCHANGE,
            routing_key=method.routing_key,
            body=body,
            properties=pika.BasicProperties(
                content_type="application/json",
                delivery_mode=2,
                message_id=properties.message_id,
                type=properties.type,
                headers=headers,
            ),
            mandatory=True,
        )

    def delay(self, envelope, properties, delay_ms):
        """Back to the kind's queue after delay_ms, through the delay exchange."""
        headers = dict(properties.headers or {})
        headers["offload-delay"] = str(RETRY_BASE_MS)
        # A high job (AMQP priority above 4) goes back to the high lane.
        high = (properties.priority or 0) > 4
        self.channel.basic_publish(
            exchange=DELAY_EXCHANGE,
            routing_key=envelope["kind"] + (":high" if high else ""),
            body=json.dumps(envelope).encode(),
            properties=pika.BasicProperties(
                content_type="application/json",
                delivery_mode=2,
                message_id=envelope["id"],
                type=envelope["kind"],
                headers=headers,
                priority=properties.priority,
                expiration=str(delay_ms),
            ),
            mandatory=True,
        )

    # -- one delivery --------------------------------------------------------------------
    def on_message(self, channel, method, properties, body):
        try:
            envelope = json.loads(body)
            if not isinstance(envelope, dict) or envelope.get("v") != 1:
                raise ValueError("not a v1 job envelope")
            for field in ("id", "kind", "attempt", "max_attempts", "timeout_ms", "submitted_at"):
                if field not in envelope:
                    raise ValueError(f"missing field {field}")
        except ValueError as e:
            self.dead_letter(method, properties, body, f"unreadable message: {e}")
            channel.basic_ack(method.delivery_tag)
            return
        if envelope["kind"] != KIND:
            # A kind this worker has no handler for: back to the queue, same attempt.
            self.delay(envelope, properties, RETRY_BASE_MS)
            channel.basic_ack(method.delivery_tag)
            return
        count = (properties.headers or {}).get("x-delivery-count", 0)
        if QUEUE_TYPE == "quorum" and count >= DELIVERY_LIMIT:
            reason = f"delivered {count + 1} times without finishing"
            self.dead_letter(method, properties, body, reason)
            self.event(envelope, "dead", error=reason)
            channel.basic_ack(method.delivery_tag)
            return

        self.in_flight += 1
        started = time.monotonic()
        started_at = now()
        self.event(
            envelope,
            "running",
            max_attempts=envelope["max_attempts"],
            submitted_at=envelope["submitted_at"],
        )
        payload = envelope.get("payload") or {}
        outcome, value = self.run(envelope, payload)
        run_ms = int((time.monotonic() - started) * 1000)
        self.in_flight -= 1
        if outcome == "ok":
            self.event(envelope, "succeeded", result=value, run_ms=run_ms, started_at=started_at)
        elif outcome == "retry" and envelope["attempt"] < envelope["max_attempts"]:
            delay_ms = RETRY_BASE_MS
            following = dict(envelope, attempt=envelope["attempt"] + 1)
            self.delay(following, properties, delay_ms)
            self.event(
                envelope,
                "retrying",
                error=f"attempt {envelope['attempt']} failed: {value}; retrying in {delay_ms} ms",
                run_ms=run_ms,
            )
        else:
            reason = f"permanent error: {value}" if outcome == "permanent" else value
            self.dead_letter(method, properties, body, reason)
            self.event(envelope, "dead", error=reason, run_ms=run_ms)
        # Only now, with the outcome confirmed by the broker.
        channel.basic_ack(method.delivery_tag)

    def run(self, envelope, payload):
        text = payload.get("text")
        if not isinstance(text, str):
            return "permanent", "payload.text must be a string"
        if payload.get("fail") == "permanent":
            return "permanent", "asked to fail"
        if payload.get("fail") == "once" and envelope["attempt"] == 1:
            return "retry", "asked to fail the first attempt"
        return "ok", {"reversed": text[::-1], "attempt": envelope["attempt"]}

    # -- running -------------------------------------------------------------------------
    def run_until_stopped(self):
        for queue in (WORK_QUEUE, HIGH_LANE):
            self.channel.queue_declare(queue, durable=True, arguments=work_queue_arguments())
        # The API declares <prefix>.workers at start; until it exists the announcement is
        # returned as unroutable, so wait for it.
        for waited in range(60):
            try:
                self.announce()
                break
            except pika.exceptions.UnroutableError:
                if waited == 0:
                    print(f"{self.name}: {WORKERS_QUEUE} does not exist yet; start offload-api", flush=True)
                time.sleep(1)
        else:
            print(f"{self.name}: {WORKERS_QUEUE} never appeared", file=sys.stderr)
            sys.exit(1)
        self.connection.call_later(HEARTBEAT_S, self.heartbeat)
        self.channel.basic_qos(prefetch_count=1)
        # The high lane first, so its jobs are taken before the normal ones waiting.
        tags = [
            self.channel.basic_consume(queue, self.on_message, auto_ack=False)
            for queue in (HIGH_LANE, WORK_QUEUE)
        ]
        print(f"{self.name}: consuming {HIGH_LANE} and {WORK_QUEUE}", flush=True)

        def stop(*_):
            self.stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        while not self.stopping:
            self.connection.process_data_events(time_limit=0.2)
        for tag in tags:
            self.channel.basic_cancel(tag)
        self.announce("leaving")
        self.connection.close()
        print(f"{self.name}: stopped", flush=True)


def publish(kind, payload):
    connection, channel = connect()
    job_id = uuid7()
    envelope = {
        "v": 1,
        "id": job_id,
        "kind": kind,
        "payload": payload,
        "attempt": 1,
        "max_attempts": 3,
        "timeout_ms": 30000,
        "submitted_at": now(),
    }
    channel.basic_publish(
        exchange=JOBS_EXCHANGE,
        routing_key=kind,
        body=json.dumps(envelope).encode(),
        properties=pika.BasicProperties(
            content_type="application/json",
            delivery_mode=2,
            message_id=job_id,
            type=kind,
            timestamp=int(time.time()),
        ),
        mandatory=True,
    )
    connection.close()
    print(job_id, flush=True)


def main(argv):
    if len(argv) >= 2 and argv[1] == "worker":
        Worker(argv[2] if len(argv) > 2 else f"py-{os.getpid()}").run_until_stopped()
    elif len(argv) == 4 and argv[1] == "publish":
        publish(argv[2], json.loads(argv[3]))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
