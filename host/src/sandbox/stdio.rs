//! Captures a plugin's stdout and stderr into its operation's log, line by line.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::AsyncWrite;
use tokio::sync::mpsc;
use tokio_util::sync::PollSender;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

use std::sync::Arc;

use super::host::{LogBudget, LogLine, capped};
use crate::model::{LogLevel, Timestamp};

/// A partial line longer than this is logged as it is, without waiting for `\n`.
const MAX_LINE: usize = 8192;

/// A WASI output stream whose lines become log lines at `level`.
pub(super) struct LogStream {
    pub(super) level: LogLevel,
    pub(super) logs: mpsc::Sender<Box<LogLine>>,
    pub(super) budget: Arc<LogBudget>,
}

impl IsTerminal for LogStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogStream {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(LineWriter {
            level: self.level,
            logs: PollSender::new(self.logs.clone()),
            budget: self.budget.clone(),
            pending: Vec::new(),
        })
    }
}

/// Splits bytes into lines and sends each one, waiting when the log queue is full.
struct LineWriter {
    level: LogLevel,
    logs: PollSender<Box<LogLine>>,
    budget: Arc<LogBudget>,
    pending: Vec<u8>,
}

impl LineWriter {
    /// Sends the first complete line in `pending`, if any. Ready(true) if one was sent.
    fn poll_send_line(&mut self, cx: &mut Context<'_>, force: bool) -> Poll<io::Result<bool>> {
        let end = match self.pending.iter().position(|&b| b == b'\n') {
            Some(i) => i + 1,
            None if force && !self.pending.is_empty() => self.pending.len(),
            None if self.pending.len() >= MAX_LINE => MAX_LINE,
            None => return Poll::Ready(Ok(false)),
        };
        if ready!(self.logs.poll_reserve(cx)).is_err() {
            // The run is over; drop what is left rather than fail the guest.
            self.pending.clear();
            return Poll::Ready(Ok(false));
        }
        let text = String::from_utf8_lossy(&self.pending[..end]).trim_end_matches(['\n', '\r']).to_owned();
        self.pending.drain(..end);
        match self.budget.admit(LogLine { level: self.level, message: capped(text), at: Timestamp::now() }) {
            Some(line) => drop(self.logs.send_item(Box::new(line))),
            // Over the log limit: the bytes are consumed and the plugin goes on.
            None => {
                self.logs.abort_send();
            }
        }
        Poll::Ready(Ok(true))
    }
}

impl AsyncWrite for LineWriter {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        // Make room first: never hold more than one long line.
        while self.pending.len() >= MAX_LINE || self.pending.contains(&b'\n') {
            if !ready!(self.poll_send_line(cx, false))? {
                break;
            }
        }
        let take = buf.len().min(MAX_LINE);
        self.pending.extend_from_slice(&buf[..take]);
        Poll::Ready(Ok(take))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while ready!(self.poll_send_line(cx, false))? {}
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while ready!(self.poll_send_line(cx, true))? {}
        Poll::Ready(Ok(()))
    }
}
