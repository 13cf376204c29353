//! What the chat shows besides the model's words: colours, the spinner, the
//! stats line and warnings. Decoration goes to stderr, and only to a
//! terminal; stdout carries the model's words.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::engine::session::ReplyStats;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorChoice {
    Auto,
    #[value(alias = "on")]
    Always,
    #[value(alias = "off")]
    Never,
}

#[derive(Clone, Copy, Debug)]
pub struct Ui {
    /// Colour codes on stdout (the reply) and on stderr (the rest).
    pub color_out: bool,
    pub color_err: bool,
    /// stderr is a terminal: spinners may draw there.
    pub err_tty: bool,
    /// stdout is a terminal: command output may go there (on a pipe stdout
    /// carries only the model's words).
    pub out_tty: bool,
    pub stats: bool,
}

const DIM: &str = "\x1b[2m";
const YELLOW: &str = "\x1b[33m";
const RED: &str = "\x1b[31m";
const BOLD_GREEN: &str = "\x1b[1;32m";
const REPLY: &str = "\x1b[36m";
const RESET: &str = "\x1b[0m";

/// A line on stderr. A closed stderr (`2>&1 | head -1`) is not worth a
/// panic, which is what `eprintln!` would do.
pub fn err_line(text: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{text}");
}

impl Ui {
    pub fn new(choice: ColorChoice, stats: bool) -> Ui {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        let out_tty = std::io::stdout().is_terminal();
        let err_tty = std::io::stderr().is_terminal();
        let pick = |tty: bool| match choice {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => tty && !no_color,
        };
        Ui {
            color_out: pick(out_tty),
            color_err: pick(err_tty),
            err_tty,
            out_tty,
            stats,
        }
    }

    fn paint(on: bool, style: &str, text: &str) -> String {
        if on {
            format!("{style}{text}{RESET}")
        } else {
            text.to_string()
        }
    }

    pub fn warn(&self, message: &str) {
        err_line(&Self::paint(self.color_err, YELLOW, message));
    }

    pub fn error(&self, message: &str) {
        err_line(&Self::paint(self.color_err, RED, message));
    }

    /// Output of a command (`/help`, `/show`): stdout in a terminal, stderr
    /// when stdout is a pipe.
    pub fn info(&self, text: &str) {
        if self.out_tty {
            let _ = writeln!(std::io::stdout().lock(), "{text}");
        } else {
            err_line(text);
        }
    }

    pub fn note(&self, message: &str) {
        err_line(&Self::paint(self.color_err, DIM, message));
    }

    /// The REPL's prompt, coloured for rustyline.
    pub fn prompt(&self) -> String {
        Self::paint(self.color_err, BOLD_GREEN, ">>> ")
    }

    /// Starts the reply's colour on stdout.
    pub fn reply_start(&self) -> &'static str {
        if self.color_out {
            REPLY
        } else {
            ""
        }
    }

    pub fn reply_end(&self) -> &'static str {
        if self.color_out {
            RESET
        } else {
            ""
        }
    }

    pub fn show_stats(&self, s: &ReplyStats) {
        if self.stats {
            err_line(&Self::paint(self.color_err, DIM, &stats_line(s)));
        }
    }

    /// A spinner on stderr, only when stderr is a terminal.
    pub fn spinner(&self, label: &str) -> Spinner {
        Spinner::start(self.err_tty, label)
    }
}

/// A progress bar on stderr, only in a terminal: `[#####.....] 45% of 2.6 GiB`.
pub fn draw_progress(ui: &Ui, label: &str, done: u64, total: u64) {
    if !ui.err_tty || total == 0 {
        return;
    }
    const WIDTH: u64 = 30;
    let filled = (done.min(total) * WIDTH / total) as usize;
    let mut err = std::io::stderr().lock();
    let _ = write!(
        err,
        "\r{label} [{}{}] {:>3}% of {}",
        "#".repeat(filled),
        ".".repeat(WIDTH as usize - filled),
        done.min(total) * 100 / total,
        crate::format::gguf::human_bytes(total)
    );
    if done >= total {
        let _ = write!(err, "\r\x1b[2K");
    }
    let _ = err.flush();
}

pub fn stats_line(s: &ReplyStats) -> String {
    let rate = |n: usize, secs: f64| {
        if n == 0 || secs <= 0.0 {
            "-".to_string()
        } else {
            format!("{:.1}", n as f64 / secs)
        }
    };
    format!(
        "[ prompt {} t/s | generation {} t/s | {} tokens ]",
        rate(s.prompt_tokens, s.prompt_secs),
        rate(s.generated_tokens, s.generation_secs),
        s.generated_tokens
    )
}

/// A braille spinner drawn on stderr by its own thread until stopped.
pub struct Spinner {
    running: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Spinner {
    fn start(draw: bool, label: &str) -> Spinner {
        let running = Arc::new(AtomicBool::new(draw));
        let thread = draw.then(|| {
            let running = running.clone();
            let label = label.to_string();
            std::thread::spawn(move || {
                const FRAMES: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
                let mut i = 0;
                // A short delay first: quick turns show no spinner at all.
                for _ in 0..15 {
                    if !running.load(Ordering::Relaxed) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                while running.load(Ordering::Relaxed) {
                    let mut err = std::io::stderr().lock();
                    let _ = write!(err, "\r{} {label}", FRAMES[i % FRAMES.len()]);
                    let _ = err.flush();
                    drop(err);
                    i += 1;
                    std::thread::sleep(Duration::from_millis(80));
                }
                if i > 0 {
                    let mut err = std::io::stderr().lock();
                    let _ = write!(err, "\r\x1b[2K");
                    let _ = err.flush();
                }
            })
        });
        Spinner { running, thread }
    }

    pub fn stop(&mut self) {
        self.running.store(false, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        self.stop();
    }
}
