//! Metrics across workers: the supervisor serves `[metrics] listen` and,
//! on each scrape, asks every worker for its exposition on the worker's
//! control channel, then merges them ([`crate::telemetry::merge`]; each
//! worker's series carry `worker="N"`).
//!
//! The exchange, after `ready`: the supervisor writes `metrics SEQ`, the
//! worker answers its exposition followed by `# EOF SEQ`. A worker too slow
//! to answer is left out of that scrape; the lines of its late answer are
//! discarded by the next one, which waits for its own sequence number.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// How long one worker may take to answer a scrape.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

const ASK: &str = "metrics ";
const END: &str = "# EOF ";

static SEQ: AtomicU64 = AtomicU64::new(1);

/// The supervisor's side: asks the worker on `control` for its metrics.
pub async fn ask(control: &mut BufReader<UnixStream>) -> std::io::Result<String> {
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    control
        .get_mut()
        .write_all(format!("{ASK}{seq}\n").as_bytes())
        .await?;
    let mut text = String::new();
    let mut line = String::new();
    loop {
        line.clear();
        if control.read_line(&mut line).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        match line.trim_end().strip_prefix(END) {
            Some(n) if n == seq.to_string() => return Ok(text),
            // The end of an answer this side stopped waiting for.
            Some(_) => text.clear(),
            None => text.push_str(&line),
        }
    }
}

/// The worker's side: what to write for a line read from the control
/// channel (`None`: not a request).
pub fn answer(request: &str, render: impl FnOnce() -> String) -> Option<String> {
    let seq = request.trim_end().strip_prefix(ASK)?;
    let mut text = render();
    if !text.ends_with('\n') && !text.is_empty() {
        text.push('\n');
    }
    text.push_str(END);
    text.push_str(seq);
    text.push('\n');
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_late_answer_is_discarded_by_the_next_scrape() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let mut control = BufReader::new(ours);
        let worker = tokio::spawn(async move {
            let mut theirs = BufReader::new(theirs);
            let mut first = String::new();
            theirs.read_line(&mut first).await.unwrap();
            let mut second = String::new();
            theirs.read_line(&mut second).await.unwrap();
            // Both answers only now: the first arrives late.
            for (req, body) in [(first, "old 1"), (second, "new 2")] {
                let out = answer(&req, || body.to_owned()).unwrap();
                theirs.get_mut().write_all(out.as_bytes()).await.unwrap();
            }
        });
        let late = tokio::time::timeout(Duration::from_millis(100), ask(&mut control)).await;
        assert!(late.is_err(), "the first scrape gives up");
        let text = ask(&mut control).await.unwrap();
        assert_eq!(text, "new 2\n");
        worker.await.unwrap();
        assert_eq!(answer("ready\n", String::new), None);
    }
}
