//! The host end of each guest agent's virtio-serial port: read its
//! heartbeats (one JSON line each) and keep the last one for the report.
//!
//! Whatever comes down this port is written by the guest, whose root may be
//! hostile. The read itself is bounded (a line longer than `MAX_LINE` is
//! skipped up to its end, and the next good lines are read), and what a
//! guest can make the agent do is rate-limited: bytes read (past the rate
//! the agent stops reading, and virtio-serial's flow control stops the
//! guest's writes), heartbeats taken, and log lines written about it.

use super::VmContext;
use cm_api::boot::{GuestAnswer, Heartbeat};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use token_bucket::TokenBucket;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::UnixStream;
use tokio_util::bytes::BytesMut;
use tokio_util::codec::{Decoder, LinesCodec, LinesCodecError};
use uuid::Uuid;

/// The longest heartbeat line accepted; a longer one is skipped.
pub const MAX_LINE: usize = 64 * 1024;
/// Bytes read per call: with `MAX_LINE`, what bounds the buffer.
const READ_CHUNK: usize = 8 * 1024;
/// How often the skipped lines of one guest are logged, at most (the
/// first at once).
const REPORT_EVERY: Duration = Duration::from_secs(60);

/// What one guest may make the agent do.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_line: usize,
    /// Bytes read per second (and at once).
    pub bytes_per_sec: f64,
    /// Heartbeats taken per second; cm-guest sends one every 2 s by
    /// default, or at its health policy's interval (`for_interval`).
    pub beats_per_sec: f64,
    pub beat_burst: f64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_line: MAX_LINE,
            bytes_per_sec: 256.0 * 1024.0,
            beats_per_sec: 5.0,
            beat_burst: 10.0,
        }
    }
}

/// The most heartbeats per second any policy makes the relay take.
const MAX_BEATS_PER_SEC: f64 = 50.0;

impl Limits {
    /// The limits for a guest beating every `interval_ms` (its health
    /// policy's), or at cm-guest's default: twice the policy's rate, never
    /// less than the default's and never more than `MAX_BEATS_PER_SEC`.
    pub fn for_interval(interval_ms: Option<u64>) -> Limits {
        let d = Limits::default();
        let Some(ms) = interval_ms else {
            return d;
        };
        let rate = (2000.0 / ms.max(1) as f64).clamp(d.beats_per_sec, MAX_BEATS_PER_SEC);
        Limits {
            beats_per_sec: rate,
            beat_burst: (2.0 * rate).max(d.beat_burst),
            ..d
        }
    }
}

/// What a reader saw that was not a heartbeat taken.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tally {
    pub beats: u64,
    /// Lines longer than the limit, skipped.
    pub too_long: u64,
    /// Lines that are not UTF-8 or not a heartbeat.
    pub malformed: u64,
    /// Heartbeats past the rate, dropped.
    pub over_rate: u64,
}

impl Tally {
    fn skipped(&self) -> u64 {
        self.too_long + self.malformed + self.over_rate
    }
}

/// Read heartbeats for as long as the VM's directory exists; reconnect
/// whenever QEMU restarts (its socket is new) or the guest goes quiet.
/// The rate follows the VM's health policy as it is when the port connects.
pub async fn relay(ctx: Arc<VmContext>, id: Uuid, sock: PathBuf) {
    loop {
        if !sock.parent().map(|d| d.exists()).unwrap_or(false) {
            return;
        }
        if let Ok(stream) = UnixStream::connect(&sock).await {
            let interval = ctx.watch.policy(id).map(|p| p.heartbeat_interval_ms);
            let limits = Limits::for_interval(interval);
            // Requests to the guest (vm/guestport.rs) are written while
            // this task reads.
            let (rd, mut wr) = stream.into_split();
            let ports = ctx.volumes.ports.clone();
            let mut requests = ports.connect(id);
            let writer = tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                while let Some(line) = requests.recv().await {
                    if wr.write_all(line.as_bytes()).await.is_err() {
                        break;
                    }
                }
            });
            read_lines(
                rd,
                &limits,
                &id.to_string(),
                |hb| ctx.beat(id, hb),
                |a| ports.answer(id, a),
            )
            .await;
            ports.disconnect(id);
            writer.abort();
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Read heartbeat lines from `r` until it ends, handing each to `beat`.
#[cfg(test)]
pub async fn read_beats<R, F>(r: R, limits: &Limits, who: &str, beat: F) -> Tally
where
    R: AsyncRead + Unpin,
    F: FnMut(Heartbeat),
{
    read_lines(r, limits, who, beat, |_| {}).await
}

/// Read heartbeat lines, and the guest's answers to the host's requests
/// (`GuestAnswer`, taken under the heartbeats' rate), from `r` until it
/// ends.
pub async fn read_lines<R, F, A>(
    mut r: R,
    limits: &Limits,
    who: &str,
    mut beat: F,
    mut answer: A,
) -> Tally
where
    R: AsyncRead + Unpin,
    F: FnMut(Heartbeat),
    A: FnMut(GuestAnswer),
{
    let mut codec = LinesCodec::new_with_max_length(limits.max_line);
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut bytes = TokenBucket::new(limits.bytes_per_sec, limits.bytes_per_sec);
    let mut beats = TokenBucket::new(limits.beats_per_sec, limits.beat_burst);
    let mut tally = Tally::default();
    let mut reported = Tally::default();
    let mut last_report: Option<Instant> = None;
    loop {
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(line)) => match serde_json::from_str::<Heartbeat>(line.trim()) {
                    Ok(hb) if beats.try_take(1.0) => {
                        tally.beats += 1;
                        beat(hb);
                    }
                    Ok(_) => tally.over_rate += 1,
                    Err(_) => match serde_json::from_str::<GuestAnswer>(line.trim()) {
                        Ok(a) if beats.try_take(1.0) => answer(a),
                        Ok(_) => tally.over_rate += 1,
                        Err(_) => tally.malformed += 1,
                    },
                },
                Ok(None) => break,
                Err(LinesCodecError::MaxLineLengthExceeded) => tally.too_long += 1,
                // Not UTF-8: the line is consumed; go on with the next.
                Err(LinesCodecError::Io(_)) => tally.malformed += 1,
            }
        }
        if tally.skipped() > reported.skipped()
            && last_report.is_none_or(|t| t.elapsed() >= REPORT_EVERY)
        {
            report(who, &tally, &reported);
            reported = tally.clone();
            last_report = Some(Instant::now());
        }
        // The codec leaves at most `max_line` bytes in `buf`, so this bounds it.
        buf.reserve(READ_CHUNK);
        let n = match (&mut r).take(READ_CHUNK as u64).read_buf(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let wait = bytes.take(n as f64);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
    if tally.skipped() > reported.skipped() {
        report(who, &tally, &reported);
    }
    tally
}

fn report(who: &str, now: &Tally, before: &Tally) {
    tracing::warn!(
        "{who}: guest agent port: skipped {} over-long lines, {} malformed, {} heartbeats over the rate",
        now.too_long - before.too_long,
        now.malformed - before.malformed,
        now.over_rate - before.over_rate,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use tokio::io::{AsyncWriteExt, ReadBuf};

    fn fast() -> Limits {
        Limits {
            bytes_per_sec: 1e12,
            beats_per_sec: 1e6,
            beat_burst: 1e6,
            ..Limits::default()
        }
    }

    fn line(seq: u64) -> String {
        format!("{{\"seq\": {seq}, \"time\": 1.5, \"services\": []}}\n")
    }

    /// A guest writing zeros without end (`cat /dev/zero > /dev/vport1p1`),
    /// then stopping, then good lines.
    struct Flood {
        zeros: u64,
        rest: Vec<u8>,
        /// The reader's buffer never needs more than this.
        largest_ask: usize,
    }

    impl AsyncRead for Flood {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            out: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            self.largest_ask = self.largest_ask.max(out.remaining());
            if self.zeros > 0 {
                let n = usize::try_from(self.zeros)
                    .unwrap_or(usize::MAX)
                    .min(out.remaining());
                out.put_slice(&vec![0u8; n]);
                self.zeros -= n as u64;
            } else {
                let n = out.remaining().min(self.rest.len());
                let rest: Vec<u8> = self.rest.drain(..n).collect();
                out.put_slice(&rest);
            }
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn an_endless_line_is_skipped_in_bounded_reads_and_good_lines_follow() {
        let mut flood = Flood {
            zeros: 256 << 20,
            // The line that ends the flood goes with it; the next ones count.
            rest: format!("\n{}{}", line(1), line(2)).into_bytes(),
            largest_ask: 0,
        };
        let mut got = vec![];
        let t = read_beats(&mut flood, &fast(), "t", |hb| got.push(hb.seq)).await;
        assert_eq!(got, vec![1, 2]);
        assert_eq!(t.too_long, 1, "{t:?}");
        assert!(
            flood.largest_ask <= MAX_LINE + 2 * READ_CHUNK,
            "a read asked for {} bytes",
            flood.largest_ask
        );
    }

    #[tokio::test]
    async fn bad_lines_are_counted_and_skipped() {
        let (mut w, r) = tokio::io::duplex(1 << 16);
        let long = "x".repeat(MAX_LINE + 10);
        let input = [
            line(1).into_bytes(),
            b"not json\n".to_vec(),
            vec![0xff, 0xfe, b'\n'],
            format!("{long}\n").into_bytes(),
            line(2).into_bytes(),
        ]
        .concat();
        let writer = tokio::spawn(async move {
            w.write_all(&input).await.unwrap();
        });
        let mut got = vec![];
        let t = read_beats(r, &fast(), "t", |hb| got.push(hb.seq)).await;
        writer.await.unwrap();
        assert_eq!(got, vec![1, 2]);
        assert_eq!(
            t,
            Tally {
                beats: 2,
                too_long: 1,
                malformed: 2,
                over_rate: 0
            }
        );
    }

    #[tokio::test]
    async fn heartbeats_past_the_rate_are_dropped() {
        let input: String = (1..=50).map(line).collect();
        let limits = Limits {
            beats_per_sec: 0.001,
            beat_burst: 10.0,
            ..fast()
        };
        let mut got = vec![];
        let t = read_beats(input.as_bytes(), &limits, "t", |hb| got.push(hb.seq)).await;
        assert_eq!(got, (1..=10).collect::<Vec<_>>());
        assert_eq!(t.over_rate, 40);
    }

    #[test]
    fn the_beat_rate_follows_the_policy() {
        let d = Limits::default();
        assert_eq!(Limits::for_interval(None).beats_per_sec, d.beats_per_sec);
        // 1 s beats fit the default; 200 ms beats need 10/s, allowed twice.
        assert_eq!(Limits::for_interval(Some(1000)).beats_per_sec, 5.0);
        let fast = Limits::for_interval(Some(200));
        assert_eq!(fast.beats_per_sec, 10.0);
        assert_eq!(fast.beat_burst, 20.0);
        assert_eq!(
            Limits::for_interval(Some(0)).beats_per_sec,
            MAX_BEATS_PER_SEC
        );
    }

    #[tokio::test(start_paused = true)]
    async fn reading_is_held_to_the_byte_rate() {
        let input: String = (1..=100).map(line).collect();
        let limits = Limits {
            bytes_per_sec: 1000.0,
            ..fast()
        };
        let start = tokio::time::Instant::now();
        let t = read_beats(input.as_bytes(), &limits, "t", |_| {}).await;
        assert_eq!(t.beats, 100);
        // About 4.5 KB at 1000 B/s with a 1000-byte burst.
        let took = start.elapsed();
        assert!(
            took >= Duration::from_secs(3) && took <= Duration::from_secs(6),
            "{took:?}"
        );
    }
}
