//! Issue 4's crash harness: cycles of load and kill -9. Each cycle starts `warren` on the same
//! data directory, runs several producers publishing persistent, self-checking messages with
//! confirms and consumers acking most deliveries (holding some, requeueing a few), kills the
//! broker at a random moment, restarts it, drains every queue and checks:
//!
//! - zero lost: every confirmed message was acked by us before the kill or is back;
//! - no body corrupted (each carries its id and a CRC; see `checked`);
//! - a message delivered before the kill comes back only with redelivered=true;
//! - nothing comes back that was never published, twice in one drain, or from an earlier
//!   cycle (those were all acked before a clean stop).
//!
//! Knobs: `WARREN_CRASH_CYCLES` (default 3), `WARREN_CRASH_SEED` (default random; always
//! printed, and with the same seed the kill moments, sizes and ack decisions repeat),
//! `WARREN_CRASH_PRODUCERS` (3), `WARREN_CRASH_CONSUMERS` (2), `WARREN_CRASH_QUEUES` (2),
//! `WARREN_CRASH_RUN_MS` (the kill lands uniformly between a tenth of this and this many ms
//! after the first confirm; default 1500).

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use durability_tests::checked;
use durability_tests::client::*;
use durability_tests::{knobs, Stop, TestDir};
use futures_lite::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions,
};
use lapin::types::FieldTable;
use lapin::{Confirmation, Connection, ConnectionProperties};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Unconfirmed publishes in flight per producer.
const WINDOW: usize = 64;
const PREFETCH: u16 = 64;
/// Deliveries a consumer channel keeps unacked on purpose, so some are in hand at the kill.
const HOLD: usize = 16;
/// Examples listed per kind of failure.
const EXAMPLES: usize = 5;

fn queue_name(q: usize) -> String {
    format!("crash-{q}")
}

/// Globally unique: cycle, producer, sequence.
fn message_id(cycle: u64, producer: u64, seq: u64) -> u64 {
    (cycle << 48) | (producer << 40) | seq
}

fn cycle_of(id: u64) -> u64 {
    id >> 48
}

/// Mostly small, some medium, a few larger than frame_max (several body frames each).
fn payload_len(rng: &mut StdRng) -> u32 {
    match rng.gen_range(0..100) {
        0..=69 => rng.gen_range(0..2048),
        70..=94 => rng.gen_range(2048..32_768),
        _ => rng.gen_range(65_536..300_000),
    }
}

/// A seed for one task, derived from the run's seed so every task's choices repeat.
fn sub_seed(seed: u64, cycle: u64, role: u64, index: u64) -> u64 {
    let mut h = seed ^ 0x9E37_79B9_7F4A_7C15;
    for v in [cycle, role, index] {
        h = (h ^ v).wrapping_mul(0x0000_0100_0000_01B3);
        h ^= h >> 29;
    }
    h
}

/// What the clients did before the kill, as far as they can know it.
#[derive(Default)]
struct Ledger {
    published: HashSet<u64>,
    confirmed: HashSet<u64>,
    nacked: HashSet<u64>,
    /// Received by a consumer at least once.
    delivered: HashSet<u64>,
    /// We sent (or were about to send) basic.ack: such a message may be gone.
    acked: HashSet<u64>,
    /// Corrupt bodies received while the broker ran.
    corrupt_live: Vec<String>,
}

struct Shared {
    ledger: Mutex<Ledger>,
    /// Set just before the kill: consumers stop acking, producers stop publishing.
    stop: AtomicBool,
}

impl Shared {
    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Default, Clone, Copy)]
struct Totals {
    published: u64,
    confirmed: u64,
    nacked: u64,
    acked_before_kill: u64,
    recovered: u64,
    recovered_unconfirmed: u64,
    lost: u64,
    duplicated: u64,
    corrupted: u64,
    missing_redelivered_flag: u64,
    phantom: u64,
    resurrected: u64,
    twice_in_drain: u64,
    out_of_order: u64,
    queues_missing: u64,
}

impl Totals {
    fn add(&mut self, o: &Totals) {
        self.published += o.published;
        self.confirmed += o.confirmed;
        self.nacked += o.nacked;
        self.acked_before_kill += o.acked_before_kill;
        self.recovered += o.recovered;
        self.recovered_unconfirmed += o.recovered_unconfirmed;
        self.lost += o.lost;
        self.duplicated += o.duplicated;
        self.corrupted += o.corrupted;
        self.missing_redelivered_flag += o.missing_redelivered_flag;
        self.phantom += o.phantom;
        self.resurrected += o.resurrected;
        self.twice_in_drain += o.twice_in_drain;
        self.out_of_order += o.out_of_order;
        self.queues_missing += o.queues_missing;
    }

    fn failed(&self) -> bool {
        self.lost
            + self.corrupted
            + self.missing_redelivered_flag
            + self.phantom
            + self.resurrected
            + self.twice_in_drain
            + self.out_of_order
            + self.queues_missing
            > 0
    }
}

impl fmt::Display for Totals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "published {}, confirmed {}, nacked {}, acked before kill {}, recovered {} \
             ({} of them never confirmed), lost {}, duplicated {}, corrupted {}, \
             redelivered flag missing {}, phantom {}, resurrected {}, twice in one drain {}, \
             out of order {}, queues missing {}",
            self.published,
            self.confirmed,
            self.nacked,
            self.acked_before_kill,
            self.recovered,
            self.recovered_unconfirmed,
            self.lost,
            self.duplicated,
            self.corrupted,
            self.missing_redelivered_flag,
            self.phantom,
            self.resurrected,
            self.twice_in_drain,
            self.out_of_order,
            self.queues_missing
        )
    }
}

/// Failure examples, by kind.
#[derive(Default)]
struct Examples(HashMap<&'static str, Vec<String>>);

impl Examples {
    fn add(&mut self, kind: &'static str, what: String) {
        let v = self.0.entry(kind).or_default();
        if v.len() < EXAMPLES {
            v.push(what);
        }
    }
}

async fn producer(
    url: String,
    queues: usize,
    shared: Arc<Shared>,
    cycle: u64,
    index: u64,
    seed: u64,
) {
    let Ok(conn) = Connection::connect(&url, ConnectionProperties::default()).await else {
        return;
    };
    let Ok(ch) = conn.create_channel().await else {
        return;
    };
    if ch
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .is_err()
    {
        return;
    }
    let mut rng = StdRng::seed_from_u64(sub_seed(seed, cycle, 1, index));
    let window = Arc::new(tokio::sync::Semaphore::new(WINDOW));
    let mut seq = 0u64;
    while !shared.stop.load(Ordering::SeqCst) {
        let Ok(permit) = window.clone().acquire_owned().await else {
            break;
        };
        let id = message_id(cycle, index, seq);
        seq += 1;
        let body = checked::encode(id, payload_len(&mut rng));
        let queue = queue_name(rng.gen_range(0..queues));
        shared.ledger().published.insert(id);
        let sent = ch
            .basic_publish(
                "".into(),
                queue.as_str().into(),
                BasicPublishOptions::default(),
                &body,
                persistent(),
            )
            .await;
        let Ok(confirm) = sent else { break };
        let shared = shared.clone();
        tokio::spawn(async move {
            match confirm.await {
                Ok(Confirmation::Ack(_)) => {
                    shared.ledger().confirmed.insert(id);
                }
                Ok(Confirmation::Nack(_)) => {
                    shared.ledger().nacked.insert(id);
                }
                // The connection died first: unknown, so neither. (NotRequested cannot happen
                // on a confirm channel.)
                Ok(Confirmation::NotRequested) | Err(_) => {}
            }
            drop(permit);
        });
    }
    // Keeps the connection until every outstanding confirm has resolved one way or the other.
    let _ = tokio::time::timeout(DEADLINE, window.acquire_many(WINDOW as u32)).await;
    drop(conn);
}

/// One consumer on one queue: acks most deliveries, requeues a few, holds up to [`HOLD`].
async fn consume_queue(ch: lapin::Channel, queue: String, shared: Arc<Shared>, seed: u64) {
    if ch
        .basic_qos(PREFETCH, BasicQosOptions::default())
        .await
        .is_err()
    {
        return;
    }
    let Ok(mut consumer) = ch
        .basic_consume(
            queue.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
    else {
        return;
    };
    let mut rng = StdRng::seed_from_u64(seed);
    let mut held: VecDeque<(u64, lapin::Acker)> = VecDeque::new();
    while let Some(Ok(d)) = consumer.next().await {
        let id = match checked::verify(&d.data) {
            Ok(id) => id,
            Err(e) => {
                shared
                    .ledger()
                    .corrupt_live
                    .push(format!("{queue}, tag {}: {e}", d.delivery_tag));
                continue;
            }
        };
        shared.ledger().delivered.insert(id);
        if shared.stop.load(Ordering::SeqCst) {
            continue;
        }
        let roll = rng.gen_range(0..100);
        let to_ack = if roll < 75 {
            Some((id, d.acker))
        } else if roll < 80 {
            if d.acker
                .nack(BasicNackOptions {
                    requeue: true,
                    ..BasicNackOptions::default()
                })
                .await
                .is_err()
            {
                break;
            }
            None
        } else {
            held.push_back((id, d.acker));
            if held.len() > HOLD {
                held.pop_front()
            } else {
                None
            }
        };
        if let Some((id, acker)) = to_ack {
            {
                // Recorded before sending, under the lock the stop flag is read with: an ack
                // the broker may have seen is always in the ledger.
                let mut ledger = shared.ledger();
                if shared.stop.load(Ordering::SeqCst) {
                    continue;
                }
                ledger.acked.insert(id);
            }
            if acker.ack(BasicAckOptions::default()).await.is_err() {
                break;
            }
        }
    }
}

async fn consumer(
    url: String,
    queues: usize,
    shared: Arc<Shared>,
    cycle: u64,
    index: u64,
    seed: u64,
) {
    let Ok(conn) = Connection::connect(&url, ConnectionProperties::default()).await else {
        return;
    };
    let mut tasks = Vec::new();
    for q in 0..queues {
        let Ok(ch) = conn.create_channel().await else {
            break;
        };
        let seed = sub_seed(seed, cycle, 2, index * 1000 + q as u64);
        tasks.push(tokio::spawn(consume_queue(
            ch,
            queue_name(q),
            shared.clone(),
            seed,
        )));
    }
    for t in tasks {
        let _ = t.await;
    }
    drop(conn);
}

/// What came back from the queues after a restart.
struct Drained {
    /// (queue, id, redelivered) of every valid body, in drain order.
    messages: Vec<(usize, u64, bool)>,
    corrupt: Vec<String>,
    missing_queues: Vec<String>,
}

async fn drain_all(url: &str, queues: usize) -> Drained {
    let conn = connect(url).await;
    let mut out = Drained {
        messages: Vec::new(),
        corrupt: Vec::new(),
        missing_queues: Vec::new(),
    };
    for q in 0..queues {
        let name = queue_name(q);
        if !queue_exists(&conn, &name).await {
            out.missing_queues.push(name);
            continue;
        }
        let ch = channel(&conn).await;
        for g in drain(&ch, &name).await {
            match checked::verify(&g.body) {
                Ok(id) => out.messages.push((q, id, g.redelivered)),
                Err(e) => out.corrupt.push(format!("{name}: {e}")),
            }
        }
    }
    let _ = conn.close(200, "drained".into()).await;
    out
}

/// Checks a drain against the ledger of the cycle that was killed (`None`: the previous
/// cycle ended with everything acked and a clean stop, so nothing may come back).
fn judge(
    cycle: u64,
    ledger: Option<&Ledger>,
    drained: &Drained,
    totals: &mut Totals,
    examples: &mut Examples,
) {
    totals.queues_missing += drained.missing_queues.len() as u64;
    for q in &drained.missing_queues {
        examples.add("queue missing after restart", q.clone());
    }
    totals.corrupted += drained.corrupt.len() as u64;
    for c in &drained.corrupt {
        examples.add("corrupted", c.clone());
    }
    let mut seen = HashSet::new();
    // Per queue and producer, the last id drained: one publisher's messages to one queue
    // must come back in the order they were published (ids grow with it).
    let mut last: HashMap<(usize, u64), u64> = HashMap::new();
    for &(queue, id, redelivered) in &drained.messages {
        totals.recovered += 1;
        if !seen.insert(id) {
            totals.twice_in_drain += 1;
            examples.add("twice in one drain", format!("{id:#x}"));
            continue;
        }
        if let Some(prev) = last.insert((queue, id >> 40), id) {
            if prev > id {
                totals.out_of_order += 1;
                examples.add(
                    "out of order",
                    format!("{id:#x} after {prev:#x} in {}", queue_name(queue)),
                );
            }
        }
        let Some(ledger) = ledger.filter(|_| cycle_of(id) == cycle) else {
            if cycle_of(id) < cycle || ledger.is_none() {
                totals.resurrected += 1;
                examples.add(
                    "resurrected (acked before a clean stop)",
                    format!("{id:#x}, redelivered={redelivered}"),
                );
            } else {
                totals.phantom += 1;
                examples.add("phantom (never published)", format!("{id:#x}"));
            }
            continue;
        };
        if !ledger.published.contains(&id) {
            totals.phantom += 1;
            examples.add("phantom (never published)", format!("{id:#x}"));
            continue;
        }
        if !ledger.confirmed.contains(&id) {
            totals.recovered_unconfirmed += 1;
        }
        if ledger.delivered.contains(&id) {
            totals.duplicated += 1;
            if !redelivered {
                totals.missing_redelivered_flag += 1;
                let how = if ledger.acked.contains(&id) {
                    "acked"
                } else {
                    "unacked"
                };
                examples.add(
                    "delivered before the kill, back without redelivered",
                    format!("{id:#x} ({how})"),
                );
            }
        }
    }
    if let Some(ledger) = ledger {
        for id in &ledger.confirmed {
            if !ledger.acked.contains(id) && !seen.contains(id) {
                totals.lost += 1;
                examples.add("lost (confirmed, not acked, not back)", format!("{id:#x}"));
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_cycles_lose_no_confirmed_message() {
    let cycles = knobs::u64_or("WARREN_CRASH_CYCLES", 3);
    let producers = knobs::u64_or("WARREN_CRASH_PRODUCERS", 3);
    let consumers = knobs::u64_or("WARREN_CRASH_CONSUMERS", 2);
    let queues = knobs::u64_or("WARREN_CRASH_QUEUES", 2).max(1) as usize;
    let run_ms = knobs::u64_or("WARREN_CRASH_RUN_MS", 1500).max(10);
    let seed = knobs::u64_opt("WARREN_CRASH_SEED").unwrap_or_else(|| rand::thread_rng().gen());
    eprintln!(
        "crash harness: WARREN_CRASH_SEED={seed} cycles={cycles} producers={producers} \
         consumers={consumers} queues={queues} run_ms={run_ms}"
    );
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = TestDir::new("crash");
    let started = Instant::now();
    let mut totals = Totals::default();
    let mut examples = Examples::default();

    for cycle in 0..cycles {
        let warren = dir.start().await;
        let url = warren.url();
        let mut cycle_totals = Totals::default();
        // Whatever is in the queues now was acked before the previous clean stop.
        let leftovers = drain_all(&url, queues).await;
        let mut leftover_totals = Totals::default();
        if cycle > 0 {
            judge(cycle, None, &leftovers, &mut leftover_totals, &mut examples);
        }
        cycle_totals.resurrected += leftover_totals.resurrected + leftover_totals.phantom;
        cycle_totals.corrupted += leftover_totals.corrupted;
        cycle_totals.queues_missing += leftover_totals.queues_missing;
        {
            let (_conn, ch) = open(&url).await;
            for q in 0..queues {
                declare_queue(&ch, &queue_name(q), durable(), FieldTable::default()).await;
            }
        }

        let shared = Arc::new(Shared {
            ledger: Mutex::new(Ledger::default()),
            stop: AtomicBool::new(false),
        });
        let mut tasks = Vec::new();
        for p in 0..producers {
            tasks.push(tokio::spawn(producer(
                url.clone(),
                queues,
                shared.clone(),
                cycle,
                p,
                seed,
            )));
        }
        for c in 0..consumers {
            tasks.push(tokio::spawn(consumer(
                url.clone(),
                queues,
                shared.clone(),
                cycle,
                c,
                seed,
            )));
        }
        eventually(DEADLINE, "the first publisher confirm", || {
            let any = !shared.ledger().confirmed.is_empty();
            async move { any }
        })
        .await;
        let kill_after = Duration::from_millis(rng.gen_range(run_ms / 10..=run_ms));
        // The crash moment itself, chosen by the seeded RNG: not a wait for anything.
        tokio::time::sleep(kill_after).await;
        shared.stop.store(true, Ordering::SeqCst);
        {
            // Taken so no consumer is between reading the flag and recording an ack.
            let _quiet = shared.ledger();
        }
        warren.kill9();
        for t in tasks {
            let abort = t.abort_handle();
            if tokio::time::timeout(DEADLINE, t).await.is_err() {
                abort.abort();
            }
        }
        let ledger = std::mem::take(&mut *shared.ledger());
        if !ledger.corrupt_live.is_empty() {
            cycle_totals.corrupted += ledger.corrupt_live.len() as u64;
            for c in &ledger.corrupt_live {
                examples.add("corrupted (delivered while running)", c.clone());
            }
        }

        let warren = dir.start().await;
        let drained = drain_all(&warren.url(), queues).await;
        judge(
            cycle,
            Some(&ledger),
            &drained,
            &mut cycle_totals,
            &mut examples,
        );
        cycle_totals.published = ledger.published.len() as u64;
        cycle_totals.confirmed = ledger.confirmed.len() as u64;
        cycle_totals.nacked = ledger.nacked.len() as u64;
        cycle_totals.acked_before_kill = ledger.acked.len() as u64;
        eprintln!(
            "crash harness: cycle {}/{cycles}, killed {kill_after:?} after the first confirm: {cycle_totals}",
            cycle + 1
        );
        totals.add(&cycle_totals);
        // Everything drained was removed (no-ack gets): a clean stop must keep it removed.
        warren.stop(Stop::Term).await;
    }
    // Nothing acked before the last clean stop comes back either.
    let warren = dir.start().await;
    let last = drain_all(&warren.url(), queues).await;
    let mut last_totals = Totals::default();
    judge(cycles, None, &last, &mut last_totals, &mut examples);
    totals.resurrected += last_totals.resurrected + last_totals.phantom;
    totals.corrupted += last_totals.corrupted;
    totals.queues_missing += last_totals.queues_missing;
    warren.terminate_clean().await;

    eprintln!(
        "crash harness: WARREN_CRASH_SEED={seed}, {cycles} cycles in {:?}\ncrash harness totals: {totals}",
        started.elapsed()
    );
    if totals.failed() {
        let mut report = String::new();
        let mut kinds: Vec<_> = examples.0.iter().collect();
        kinds.sort();
        for (kind, ids) in kinds {
            report.push_str(&format!("\n  {kind}: {}", ids.join(", ")));
        }
        panic!("crash harness failed (seed {seed}): {totals}{report}");
    }
    assert!(
        totals.confirmed > 0,
        "no message was confirmed in {cycles} cycles"
    );
}

#[test]
fn judge_tells_every_kind_of_outcome_apart() {
    let id = |seq| message_id(1, 0, seq);
    let mut ledger = Ledger::default();
    for seq in 0..6 {
        ledger.published.insert(id(seq));
    }
    for seq in 0..5 {
        ledger.confirmed.insert(id(seq));
    }
    // 0: confirmed, never delivered. 1: delivered and acked, gone. 2: delivered and acked,
    // back. 3: delivered, not acked, back unflagged. 4: confirmed, not acked, gone.
    // 5: never confirmed, back.
    for seq in [1, 2, 3] {
        ledger.delivered.insert(id(seq));
    }
    for seq in [1, 2] {
        ledger.acked.insert(id(seq));
    }
    let drained = Drained {
        messages: vec![
            (0, id(0), false),
            (0, id(3), false),
            (0, id(2), true),
            (0, id(5), false),
            (0, id(0), false),
            (1, id(99), false),
            (1, message_id(0, 0, 7), true),
        ],
        corrupt: vec!["crash-0: bad".into()],
        missing_queues: vec!["crash-1".into()],
    };
    let mut t = Totals::default();
    let mut ex = Examples::default();
    judge(1, Some(&ledger), &drained, &mut t, &mut ex);
    assert_eq!(t.recovered, 7);
    assert_eq!(t.twice_in_drain, 1);
    assert_eq!(t.duplicated, 2);
    assert_eq!(t.missing_redelivered_flag, 1);
    assert_eq!(t.lost, 1);
    assert_eq!(t.recovered_unconfirmed, 1);
    assert_eq!(t.phantom, 1);
    assert_eq!(t.resurrected, 1);
    assert_eq!(t.corrupted, 1);
    assert_eq!(t.out_of_order, 1);
    assert_eq!(t.queues_missing, 1);
    assert!(t.failed());
    assert_eq!(
        ex.0["lost (confirmed, not acked, not back)"],
        [format!("{:#x}", id(4))]
    );

    // A clean drain of the same ledger passes.
    let clean = Drained {
        messages: vec![
            (0, id(0), false),
            (1, id(2), true),
            (0, id(3), true),
            (1, id(4), false),
        ],
        corrupt: Vec::new(),
        missing_queues: Vec::new(),
    };
    let mut t = Totals::default();
    judge(1, Some(&ledger), &clean, &mut t, &mut Examples::default());
    assert!(!t.failed(), "{t}");
    assert_eq!(t.duplicated, 2);

    // After a clean stop, anything at all is a resurrection.
    let mut t = Totals::default();
    judge(2, None, &clean, &mut t, &mut Examples::default());
    assert_eq!(t.resurrected, 4);
}
