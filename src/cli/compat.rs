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
    ("-ctk", "--cache-type-k"),
    ("-ctv", "--cache-type-v"),
    ("-co", "--color"),
    ("-cnv", "--conversation"),
    ("-no-cnv", "--no-conversation"),
    ("-st", "--single-turn"),
    ("-mli", "--multiline-input"),
    ("-mg", "--main-gpu"),
    ("-ts", "--tensor-split"),
    ("-sm", "--split-mode"),
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
    "--main-gpu",
    "--tensor-split",
    "--split-mode",
    "--cache-type-k",
    "--cache-type-v",
    "--gpu-mem",
    "--n-prompt",
    "--n-gen",
    "-d",
    "--n-depth",
    "--repetitions",
    "-o",
    "--output",
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
/// their value only when it is one of these words, or (`llm bench -fa 0,1`)
/// a comma-separated list of them.
const OPTIONAL_VALUE: &[(&str, &[&str])] = &[
    ("--flash-attn", &["on", "off", "auto", "0", "1"]),
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
        let values = std::mem::take(&mut optional);
        if arg
            .to_str()
            .is_some_and(|a| !values.is_empty() && a.split(',').all(|v| values.contains(&v)))
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

/// One-character flags that take a number, so that `-c2048` is `-c 2048`.
const NUMBER_SHORTS: &[char] = &['c', 'n', 't', 's'];

/// A llama.cpp flag we do not know that starts like one of our numeric
/// short flags (`-cb`, `-ctk`, `-nkvo`, `-tb`): clap would read `-cb` as
/// `-c b` and blame the value. The error names the whole flag instead.
/// Takes the arguments after [`rewrite`].
pub fn unknown_joined_flag(args: &[OsString]) -> Option<String> {
    let mut value_next = false;
    for arg in args.iter().skip(1) {
        let Some(text) = arg.to_str() else {
            value_next = false;
            continue;
        };
        if value_next {
            value_next = false;
            continue;
        }
        if text == "--" {
            return None;
        }
        value_next = TAKES_VALUE.contains(&text);
        let mut chars = text.chars();
        if let (Some('-'), Some(short), Some(third)) = (chars.next(), chars.next(), chars.next()) {
            if NUMBER_SHORTS.contains(&short) && third.is_ascii_alphabetic() {
                return Some(format!(
                    "unknown option '{text}' (-{short} takes a number, as in -{short} 4096; see --help for the options)"
                ));
            }
        }
    }
    None
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
    fn bench_spellings_and_lists() {
        assert_eq!(
            rw(&[
                "llm", "bench", "m", "-ngl", "0,99", "-fa", "0,1", "-d", "-1", "-sm", "layer",
                "-ts", "3,1", "-mg", "1"
            ]),
            [
                "llm",
                "bench",
                "m",
                "--n-gpu-layers",
                "0,99",
                "--flash-attn",
                "0,1",
                "-d",
                "-1",
                "--split-mode",
                "layer",
                "--tensor-split",
                "3,1",
                "--main-gpu",
                "1"
            ]
        );
        // A list that is not all flash-attention words is not its value.
        assert_eq!(
            rw(&["llm", "chat", "-fa", "on,x", "-ngl"]),
            ["llm", "chat", "--flash-attn", "on,x", "--n-gpu-layers"]
        );
    }

    #[test]
    fn unknown_flags_that_start_like_a_short_one_are_named() {
        let check = |args: &[&str]| {
            unknown_joined_flag(&args.iter().map(OsString::from).collect::<Vec<_>>())
        };
        assert!(check(&["llm", "chat", "m", "-cb"])
            .unwrap()
            .starts_with("unknown option '-cb'"));
        assert!(check(&["llm", "run", "m", "-tb", "4"]).is_some());
        assert_eq!(check(&["llm", "chat", "m", "-c2048", "-t", "4"]), None);
        assert_eq!(check(&["llm", "chat", "m", "-p", "-cb"]), None);
        assert_eq!(check(&["llm", "chat", "m", "--", "-cb"]), None);
    }

    #[test]
    fn joined_values_and_unknown_flags_pass_through() {
        assert_eq!(
            rw(&["llm", "chat", "--temp=0", "-xyz", "-ngl"]),
            ["llm", "chat", "--temp=0", "-xyz", "--n-gpu-layers"]
        );
    }
}
