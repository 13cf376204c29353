//! llama.cpp's single-dash long flags (`-ngl 99`, `-sys "..."`, `-fa on`),
//! rewritten to our long flags before clap sees them: clap's short flags are
//! one character, and users type these from muscle memory.

use std::ffi::OsString;

/// (llama.cpp spelling, our flag). One-character flags (`-c`, `-n`, `-t`,
/// `-p`, `-s`, `-f`, `-m`, `-r`) are clap short flags already.
const LLAMA_FLAGS: &[(&str, &str)] = &[
    ("-ngl", "--n-gpu-layers"),
    ("-sm", "--split-mode"),
    ("-ts", "--tensor-split"),
    ("-mg", "--main-gpu"),
    ("-sys", "--system"),
    ("-sysf", "--system-file"),
    ("-fa", "--flash-attn"),
    ("-co", "--color"),
    ("-cnv", "--conversation"),
    ("-no-cnv", "--no-conversation"),
    ("-st", "--single-turn"),
    ("-mli", "--multiline-input"),
];

/// Our flags whose next argument is a value, so a value that happens to be
/// spelled like a flag (`--prompt -sys`) is left alone.
const TAKES_VALUE: &[&str] = &[
    "-p",
    "--prompt",
    "--system",
    "--system-file",
    "-f",
    "--file",
    "-m",
    "--model",
    "-r",
    "--reverse-prompt",
    "--chat-template",
    "--chat-template-file",
    "-c",
    "--ctx-size",
    "-n",
    "--n-predict",
    "-t",
    "--threads",
    "--n-gpu-layers",
    "--split-mode",
    "--tensor-split",
    "--main-gpu",
    "--gpu-mem",
    "-s",
    "--seed",
    "--temp",
    "--top-k",
    "--top-p",
    "--min-p",
    "--repeat-penalty",
    "--repeat-last-n",
    "--presence-penalty",
    "--frequency-penalty",
];

/// Flags whose value may be left out (`-fa`, `-co`): the next argument is
/// their value only when it is one of these words.
const OPTIONAL_VALUE: &[(&str, &[&str])] = &[
    ("--flash-attn", &["on", "off", "auto"]),
    ("--color", &["on", "off", "auto", "always", "never"]),
];

/// The command line with llama.cpp's spellings turned into ours. Everything
/// after `--` and every option value is passed through untouched.
pub fn rewrite<I: IntoIterator<Item = OsString>>(args: I) -> Vec<OsString> {
    let mut out = Vec::new();
    let mut value_next = false;
    let mut optional: &[&str] = &[];
    let mut literal = false;
    for arg in args {
        if literal || value_next {
            value_next = false;
            out.push(arg);
            continue;
        }
        if std::mem::take(&mut optional)
            .iter()
            .any(|v| arg.to_str() == Some(v))
        {
            out.push(arg);
            continue;
        }
        let Some(text) = arg.to_str() else {
            out.push(arg);
            continue;
        };
        if text == "--" {
            literal = true;
            out.push(arg);
            continue;
        }
        let flag = LLAMA_FLAGS
            .iter()
            .find(|(llama, _)| *llama == text)
            .map_or(text, |(_, ours)| ours);
        value_next = TAKES_VALUE.contains(&flag);
        optional = OPTIONAL_VALUE
            .iter()
            .find(|(f, _)| *f == flag)
            .map_or(&[], |(_, values)| values);
        out.push(OsString::from(flag));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rw(args: &[&str]) -> Vec<String> {
        rewrite(args.iter().map(OsString::from))
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect()
    }

    #[test]
    fn llama_cpp_spellings_become_ours() {
        assert_eq!(
            rw(&[
                "llm", "chat", "m.gguf", "-ngl", "99", "-sys", "be brief", "-fa", "on", "-c",
                "2048"
            ]),
            [
                "llm",
                "chat",
                "m.gguf",
                "--n-gpu-layers",
                "99",
                "--system",
                "be brief",
                "--flash-attn",
                "on",
                "-c",
                "2048"
            ]
        );
    }

    #[test]
    fn values_and_literals_are_untouched() {
        assert_eq!(
            rw(&["llm", "chat", "m", "-p", "-sys", "--system", "-ngl"]),
            ["llm", "chat", "m", "-p", "-sys", "--system", "-ngl"]
        );
        assert_eq!(rw(&["llm", "--", "-ngl"]), ["llm", "--", "-ngl"]);
    }

    #[test]
    fn optional_values_are_taken_only_when_they_are_values() {
        assert_eq!(
            rw(&["llm", "chat", "m", "-fa", "-ngl", "99", "-co", "-sys", "x"]),
            [
                "llm",
                "chat",
                "m",
                "--flash-attn",
                "--n-gpu-layers",
                "99",
                "--color",
                "--system",
                "x"
            ]
        );
        assert_eq!(
            rw(&["llm", "chat", "m", "-fa", "off", "-co", "never"]),
            [
                "llm",
                "chat",
                "m",
                "--flash-attn",
                "off",
                "--color",
                "never"
            ]
        );
    }

    #[test]
    fn joined_values_and_unknown_flags_pass_through() {
        assert_eq!(
            rw(&["llm", "chat", "--temp=0", "-xyz", "-ngl"]),
            ["llm", "chat", "--temp=0", "-xyz", "--n-gpu-layers"]
        );
    }
}
