//! `llm chat MODEL`: the mode comes from the terminal. `--prompt` answers
//! once; a file or pipe on stdin is a scripted conversation; /dev/null or a
//! closed stdin has nothing to say; a terminal gets the REPL.

use std::io::{self, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};

use crate::chat::catalog::Catalogue;
use crate::chat::driver::{Chat, Next};
use crate::chat::session::{ChatSession, StopReason};
use crate::chat::setup::{self, TemplateChoice};
use crate::chat::think::Reasoning;
use crate::chat::ui::{draw_progress, ColorChoice, Ui};
use crate::chat::{commands, interrupt, repl, script, text_input};
use crate::cli::model_args::ModelArgs;
use crate::cli::run::SamplingArgs;
use crate::engine::load;
use crate::engine::sampler::SamplingParams;
use crate::engine::source::ModelSource;
use crate::format::gguf::human_bytes;
use crate::model::Model;

/// Models from this size get a progress bar while they are read in.
const PREFETCH_FROM: u64 = 256 << 20;

/// The most tokens of a reply without a terminal, unless -n says otherwise:
/// a small model that never ends its turn must not write for minutes.
const PIPED_LIMIT: usize = 1024;

/// A flag given twice takes its last value, as in llama.cpp.
#[derive(clap::Args, Debug)]
#[command(args_override_self = true)]
pub struct ChatArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Answer this one message and exit ('-' reads it from stdin; piped stdin
    /// is put before it)
    #[arg(short = 'p', long, allow_hyphen_values = true)]
    pub prompt: Option<String>,
    /// The system prompt (llama.cpp: -sys)
    #[arg(long, value_name = "TEXT", conflicts_with = "system_file")]
    pub system: Option<String>,
    /// Read the system prompt from a file (llama.cpp: -sysf)
    #[arg(long, value_name = "FILE")]
    pub system_file: Option<PathBuf>,
    /// Most tokens per reply (-1: until the model ends its turn or the context
    /// is full). Without -n, a reply that keeps repeating itself is cut, and
    /// so is a one-shot or scripted reply at 1024 tokens
    // None when not given, so that /load knows the flag is to win.
    #[arg(short = 'n', long = "n-predict", allow_hyphen_values = true)]
    pub n_predict: Option<i64>,
    /// A built-in template by name (chatml, llama3, gemma, ...); see `llm chat --list-templates`
    #[arg(
        long = "chat-template",
        value_name = "NAME",
        conflicts_with = "chat_template_file"
    )]
    pub chat_template: Option<String>,
    /// A Jinja chat template from a file
    #[arg(long = "chat-template-file", value_name = "PATH")]
    pub chat_template_file: Option<PathBuf>,
    /// Also stop a reply at this text (repeatable; llama.cpp: -r)
    #[arg(short = 'r', long = "reverse-prompt", value_name = "TEXT")]
    pub stop: Vec<String>,
    /// Colours: auto (in a terminal, unless NO_COLOR is set), always or never (llama.cpp: -co)
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto, num_args = 0..=1, default_missing_value = "always")]
    pub color: ColorChoice,
    /// A reasoning model's thinking (<think>...</think>): show (dimmed in a
    /// terminal) or hide; by default shown in a terminal, hidden on a pipe
    #[arg(long, value_enum, value_name = "show|hide")]
    pub reasoning: Option<Reasoning>,
    /// Hide the speed line after each reply
    #[arg(long)]
    pub no_stats: bool,
    /// Keep writing past end-of-generation tokens (until -n or a full context)
    #[arg(long)]
    pub ignore_eos: bool,
    /// Print each rendered prompt on stderr before the reply
    #[arg(long)]
    pub verbose_prompt: bool,
    /// Answer one message, then exit (llama.cpp: -st)
    #[arg(long)]
    pub single_turn: bool,
    /// Accepted for llama.cpp's sake: flash attention (on|off|auto); the CPU path uses standard attention
    #[arg(long = "flash-attn", value_name = "on|off|auto", num_args = 0..=1, default_missing_value = "on")]
    pub flash_attn: Option<String>,
    /// Accepted for llama.cpp's sake (conversation mode is always on)
    #[arg(long, hide = true)]
    pub conversation: bool,
    /// llama.cpp's raw-completion mode: use `llm run` instead
    #[arg(long, hide = true)]
    pub no_conversation: bool,
    /// Accepted for llama.cpp's sake (multi-line input is always available)
    #[arg(long, hide = true)]
    pub multiline_input: bool,
    #[command(flatten)]
    pub sampling: SamplingArgs,
}

/// Where stdin comes from decides the mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stdin {
    Terminal,
    /// /dev/null, or no stdin at all.
    Nothing,
    /// A file, pipe or socket.
    Data,
}

fn stdin_kind() -> Stdin {
    if io::stdin().is_terminal() {
        return Stdin::Terminal;
    }
    #[cfg(unix)]
    {
        use std::mem::ManuallyDrop;
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        use std::os::unix::io::FromRawFd;
        // SAFETY: fd 0 is only inspected, never closed (ManuallyDrop).
        let stdin = ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(0) });
        let Ok(meta) = stdin.metadata() else {
            return Stdin::Nothing;
        };
        let null = std::fs::metadata("/dev/null").ok();
        if meta.file_type().is_char_device() && null.is_some_and(|n| n.rdev() == meta.rdev()) {
            return Stdin::Nothing;
        }
    }
    Stdin::Data
}

pub fn run(args: &ChatArgs) -> Result<ExitCode> {
    if args.no_conversation {
        bail!("llm chat always chats; for raw completion without a template use `llm run MODEL -p TEXT`");
    }
    // Ctrl-C (or SIGTERM) from here until the model is loaded ends the
    // program at once, whatever it is waiting for.
    interrupt::loading();
    let catalogue = Catalogue::load()?;
    let config = args.model.config()?;
    let model_path = config.path.clone();
    // Check the file and the template before anything else, so that even a
    // chat with nothing to say reports a bad model.
    let source = ModelSource::open(&model_path)?;
    let md = source.metadata();
    let family = setup::family_for(&catalogue, md)?;
    let choice = TemplateChoice {
        name: args.chat_template.as_deref(),
        file: args.chat_template_file.as_deref(),
    };
    let (template, template_note) = setup::choose_template(&choice, md, family)?;
    let system = match &args.system_file {
        Some(f) => Some(text_input::read_to_string(f)?),
        None => args.system.clone(),
    };

    let stdin = stdin_kind();
    let message = match args.prompt.as_deref() {
        Some("-") => Some(read_stdin()?),
        Some(p) if stdin == Stdin::Data => {
            let piped = read_stdin()?;
            let piped = piped.trim_end_matches(['\n', '\r']);
            Some(if piped.trim().is_empty() {
                p.to_string()
            } else {
                format!("{piped}\n\n{p}")
            })
        }
        Some(p) => Some(p.to_string()),
        None if stdin == Stdin::Nothing => return Ok(ExitCode::SUCCESS),
        None => None,
    };
    if message.as_deref().is_some_and(|m| m.trim().is_empty()) {
        bail!("the message is empty: nothing to answer");
    }

    let ui = Ui::new(args.color, !args.no_stats);
    if args.flash_attn.as_deref() == Some("on") {
        ui.note("llm: --flash-attn on: the CPU path uses standard attention (same results)");
    }
    let threads = config.threads;
    let mut spinner = ui.spinner("loading model");
    let loaded = load::load_source(source.clone(), &config.load_options())?;
    let tok = source.tokenizer()?;
    spinner.stop();
    for note in &loaded.notes {
        ui.warn(note);
    }
    let (model, n_ctx) = (loaded.model, loaded.n_ctx);
    // A large model is read in now, with a progress bar, rather than page by
    // page during the first prompt.
    if ui.err_tty && model.weights.file_bytes() >= PREFETCH_FROM {
        model
            .weights
            .prefetch(|done, total| draw_progress(&ui, "loading model", done, total));
    }
    if let Some(note) = &template_note {
        ui.warn(note);
    }
    let base = family.map_or(SamplingParams::default(), |f| {
        f.sampling.over(SamplingParams::default())
    });
    let sampling = args.sampling.over(base);
    let summary = model_summary(&model_path, md, &model, threads);
    let mut stops = family.map(|f| f.stop.clone()).unwrap_or_default();
    stops.extend(args.stop.iter().cloned());
    let mut session = ChatSession::new(model, tok, template, &stops, n_ctx, sampling)?;
    // Without -n, we guard against replies that run on; -n is the user's
    // own limit (-1: none) and lifts the guards.
    let default_limit = (args.n_predict.is_none() && (message.is_some() || stdin == Stdin::Data))
        .then_some(PIPED_LIMIT);
    session.n_predict = match args.n_predict {
        Some(n) => usize::try_from(n).ok(),
        None => default_limit,
    };
    session.loop_check = args.n_predict.is_none();
    session.ignore_eos = args.ignore_eos;
    session.conversation.system = system;
    let mut chat = Chat {
        session,
        ui,
        model_path,
        model_summary: summary,
        default_limit,
        show_thinking: match args.reasoning {
            Some(r) => r == Reasoning::Show,
            None => ui.out_tty,
        },
        n_predict_given: args.n_predict.is_some(),
    };
    if args.verbose_prompt {
        chat.session.verbose_prompt = true;
    }
    interrupt::loaded();

    // A random seed is said, so that a run can be repeated with --seed.
    let random_seed = args.sampling.seed.is_none_or(|s| s < 0);
    let sampling_is_random = chat.session.sampler.params.temp > 0.0;
    if random_seed && sampling_is_random && stdin != Stdin::Terminal {
        chat.ui
            .note(&format!("seed: {}", chat.session.sampler.params.seed));
    }
    if let Some(message) = message {
        return one_shot(&mut chat, &message);
    }
    match stdin {
        Stdin::Data => scripted(&mut chat),
        _ => {
            if args.single_turn {
                return single_turn_repl(&mut chat);
            }
            let banner = banner(&chat);
            repl::run(&mut chat, &banner)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn read_stdin() -> Result<String> {
    let mut bytes = Vec::new();
    io::stdin()
        .read_to_end(&mut bytes)
        .context("reading standard input")?;
    String::from_utf8(bytes).map_err(|e| {
        let at = script::where_not_utf8(e.as_bytes()).unwrap_or_default();
        anyhow::anyhow!("standard input, {at}: not UTF-8 text")
    })
}

fn one_shot(chat: &mut Chat, message: &str) -> Result<ExitCode> {
    let stats = chat.say(message, "\n")?;
    Ok(if stats.stop == StopReason::Interrupted {
        ExitCode::from(interrupt::exit_code())
    } else {
        ExitCode::SUCCESS
    })
}

/// One turn per line of stdin, each reply followed by a blank line. Slash
/// commands are carried out; other lines are messages.
fn scripted(chat: &mut Chat) -> Result<ExitCode> {
    let mut turns = script::Turns::new(io::stdin().lock());
    // A command that fails is reported and the script goes on, but the
    // exit status says so: a script that meant to /save must not look done.
    let mut failed = false;
    loop {
        // Ctrl-C while waiting for the next line ends the chat, as usual.
        interrupt::restore_default();
        let Some(turn) = turns.next_turn()? else {
            break;
        };
        interrupt::reset();
        interrupt::install();
        if commands::is_known(&turn) || commands::looks_like_command(&turn) {
            match commands::parse(&turn).map_err(anyhow::Error::msg) {
                Ok(Some(command)) => match chat.run(command, "\n\n") {
                    Ok(Next::Exit) => break,
                    Ok(Next::Continue) => {}
                    Err(e) => {
                        chat.ui.error(&format!("llm: {e:#}"));
                        failed = true;
                    }
                },
                Ok(None) => {}
                Err(e) => {
                    chat.ui.error(&format!("llm: {e:#}"));
                    failed = true;
                }
            }
            continue;
        }
        let stats = chat.say(&turn, "\n\n")?;
        if stats.stop == StopReason::Interrupted {
            return Ok(ExitCode::from(interrupt::exit_code()));
        }
    }
    io::stdout().flush()?;
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// `-st` in a terminal: read one message, answer it, exit.
fn single_turn_repl(chat: &mut Chat) -> Result<ExitCode> {
    let mut line = String::new();
    let _ = write!(io::stderr(), "{}", chat.ui.prompt());
    // Ctrl-C while waiting for the line ends the program, as usual.
    interrupt::restore_default();
    io::stdin().read_line(&mut line)?;
    interrupt::install();
    if line.trim().is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    one_shot(chat, line.trim())
}

fn model_summary(
    path: &Path,
    md: &crate::format::gguf::Metadata,
    model: &Model,
    threads: usize,
) -> String {
    let name = md.str("general.name").ok().flatten().unwrap_or("(unnamed)");
    let arch = md.str("general.architecture").ok().flatten().unwrap_or("?");
    let bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    format!(
        "model:   {name} ({arch}, {} layers)\nfile:    {} ({})\nthreads: {threads} ({})",
        model.config.n_layer,
        path.display(),
        human_bytes(bytes),
        ggml::cpu::isa().name()
    )
}

fn banner(chat: &Chat) -> String {
    let s = &chat.session;
    format!(
        "{}\ncontext {} tokens · template {} · seed {} · type /help for commands, \"\"\" for several lines,\nCtrl-C stops a reply, Ctrl-D or /exit quits",
        chat.model_summary.lines().next().unwrap_or_default().trim_start_matches("model:").trim(),
        s.n_ctx(),
        s.template.name,
        s.sampler.params.seed,
    )
}
