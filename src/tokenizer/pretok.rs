//! What `tokenizer.ggml.pre` means for a byte-level BPE vocabulary: the regular
//! expressions that cut text into words before the merges run, and the flags
//! that go with them, as llama.cpp (llama-vocab.cpp) assigns them.
//!
//! Each pre-tokenizer is a list of expressions applied one after the other;
//! every expression splits each piece left by the previous ones into its
//! matches and the text between them (HF's `Split` with `Isolated`). Where
//! llama.cpp rewrote a model's expression for C++ `std::regex` (case-insensitive
//! groups spelled out, Unicode case classes as lookaheads over ASCII), we use
//! its rewritten form, because that is the behaviour we must match.

/// GPT-2's expression (also the heart of many others).
const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";

/// Llama 3 (digits in groups of up to three).
const LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Qwen 2 (one digit per word).
const QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Qwen 3.5: letters keep their combining marks.
const QWEN35: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Mistral's Tekken, in llama.cpp's rewriting: an upper-case letter is "a letter
/// that is not a-z" and a lower-case one "a letter that is not A-Z", so letters
/// outside ASCII count as both.
const TEKKEN: &str = r"[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// GPT-4o / Llama 4, rewritten the same way as Tekken.
const GPT4O: &str = r"[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";

const SEED_CODER: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1}| ?[^\s\p{L}\p{N}\r\n]+|\s*[\r\n]+|\s+(?!\S)|\s+";

const BAILINGMOE: &str = r"'(?:[sSdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+";

const UFAKZEKA: &str =
    r"[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

const MINICPM5: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}+| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

const PORO: &str = r" ?[^(\s|.,!?…。，、।۔،)]+";

const DEEPSEEK3: &str = r"[!\x22#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// How one `tokenizer.ggml.pre` value tokenizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PreTokenizer {
    /// The expressions, applied in order.
    pub regexes: &'static [&'static str],
    /// A word that is itself a token is emitted whole, before any merge
    /// (llama.cpp's and HF's `ignore_merges`).
    pub ignore_merges: bool,
    /// Overrides the BPE default of adding no BOS (before the file's own
    /// `tokenizer.ggml.add_bos_token`, which wins).
    pub add_bos: bool,
    /// The vocabulary has no default BOS token (ChatGLM).
    pub no_default_bos: bool,
}

const fn pre(regexes: &'static [&'static str]) -> PreTokenizer {
    PreTokenizer {
        regexes,
        ignore_merges: false,
        add_bos: false,
        no_default_bos: false,
    }
}

impl PreTokenizer {
    const fn ignore_merges(mut self) -> Self {
        self.ignore_merges = true;
        self
    }
    const fn add_bos(mut self) -> Self {
        self.add_bos = true;
        self
    }
    const fn no_default_bos(mut self) -> Self {
        self.no_default_bos = true;
        self
    }
}

const DEFAULT: PreTokenizer = pre(&[r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", r"[0-9][0-9][0-9]"]);

/// Values llama.cpp knows that need code of their own (digit grouping,
/// Han-aware splitting, SPM-style BPE, ...), which we do not have yet.
const NOT_YET: &[&str] = &[
    "deepseek-llm",
    "jais-2",
    "gemma4",
    "granite-embed-multi-311m",
    "mmbert",
    "sarvam-moe",
    "whitespace",
    "chameleon",
    "granite-embed-multi-97m",
    "tiny_aya",
    "cohere2moe",
    "superbpe",
    "kimi-k2",
    "afmoe",
    "youtu",
    "spark2_5",
    "exaone-moe",
    "laguna",
];

/// The pre-tokenizer that `tokenizer.ggml.pre` names. `None` (the key is
/// absent) means llama.cpp's `default`, which it also uses then (with a warning).
pub fn lookup(name: Option<&str>) -> Result<PreTokenizer, String> {
    let Some(name) = name else {
        return Ok(DEFAULT);
    };
    Ok(match name {
        "default" => DEFAULT,
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0"
        | "lfm2" | "jina-v5-nano" => pre(&[LLAMA3]).ignore_merges().add_bos(),
        "dbrx" | "smaug-bpe" => pre(&[LLAMA3]),
        "chatglm-bpe" => pre(&[LLAMA3]).no_default_bos(),
        "glm4" | "glm5" => pre(&[LLAMA3]).no_default_bos().ignore_merges(),
        "minicpm5" => pre(&[r"\p{N}{1,3}", MINICPM5]).ignore_merges(),
        "deepseek-coder" => pre(&[
            r"[\r\n]",
            r"\s?\p{L}+",
            r"\s?\p{P}+",
            r"[一-龥ࠀ-一가-퟿]+",
            r"\p{N}",
        ]),
        "deepseek-v3" | "hunyuan-dense" | "joyai-llm" | "hy_v4" => {
            pre(&[r"\p{N}{1,3}", r"[一-龥぀-ゟ゠-ヿ]+", DEEPSEEK3])
        }
        "falcon" => pre(&[r"[\p{P}\$\+<=>\^~\|`]+", GPT2, r"[0-9][0-9][0-9]"]),
        "starcoder" | "refact" | "command-r" | "smollm" | "codeshell" | "exaone" | "minerva-7b"
        | "mellum2" => pre(&[r"\p{N}", GPT2]),
        "gpt-2" | "phi-2" | "jina-es" | "jina-de" | "gigachat" | "jina-v2-es" | "jina-v2-de"
        | "a.x-4.0" | "mellum" | "modern-bert" | "jina-v1-en" | "jina-v2-code" | "roberta-bpe"
        | "mpt" | "olmo" | "jais" | "trillion" | "granite-docling" | "exaone4" => pre(&[GPT2]),
        "qwen2" | "deepseek-r1-qwen" | "kormo" | "f2llmv2" | "megrez" | "stablelm2" | "hunyuan"
        | "solar-open" | "grok-2" => pre(&[QWEN2]),
        "qwen35" => pre(&[QWEN35]),
        "poro-chat" | "bloom" | "gpt3-finnish" => pre(&[PORO]),
        "viking" => pre(&[PORO, r"\p{N}"]),
        "tekken" => pre(&[TEKKEN]).ignore_merges().add_bos(),
        "gpt-4o" | "llama4" | "kanana2" | "talkie" | "minimax-m2" => pre(&[GPT4O]),
        "seed-coder" => pre(&[SEED_CODER]),
        "bailingmoe" | "bailingmoe2" | "llada-moe" => pre(&[BAILINGMOE]),
        "ufakzeka" => pre(&[UFAKZEKA]),
        other if NOT_YET.contains(&other) => {
            return Err(format!(
                "pre-tokenizer '{other}' (tokenizer.ggml.pre) is not supported by llm yet"
            ))
        }
        other => {
            return Err(format!(
            "unknown pre-tokenizer '{other}' (tokenizer.ggml.pre); llama.cpp would refuse it too"
        ))
        }
    })
}

/// Every name `lookup` accepts, for tests.
#[cfg(test)]
pub const KNOWN: &[&str] = &[
    "default",
    "llama3",
    "llama-v3",
    "llama-bpe",
    "falcon3",
    "falcon-h1",
    "pixtral",
    "midm-2.0",
    "lfm2",
    "jina-v5-nano",
    "dbrx",
    "smaug-bpe",
    "chatglm-bpe",
    "glm4",
    "glm5",
    "minicpm5",
    "deepseek-coder",
    "deepseek-v3",
    "hunyuan-dense",
    "joyai-llm",
    "hy_v4",
    "falcon",
    "starcoder",
    "refact",
    "command-r",
    "smollm",
    "codeshell",
    "exaone",
    "minerva-7b",
    "mellum2",
    "gpt-2",
    "phi-2",
    "jina-es",
    "jina-de",
    "gigachat",
    "jina-v2-es",
    "jina-v2-de",
    "a.x-4.0",
    "mellum",
    "modern-bert",
    "jina-v1-en",
    "jina-v2-code",
    "roberta-bpe",
    "mpt",
    "olmo",
    "jais",
    "trillion",
    "granite-docling",
    "exaone4",
    "qwen2",
    "deepseek-r1-qwen",
    "kormo",
    "f2llmv2",
    "megrez",
    "stablelm2",
    "hunyuan",
    "solar-open",
    "grok-2",
    "qwen35",
    "poro-chat",
    "bloom",
    "gpt3-finnish",
    "viking",
    "tekken",
    "gpt-4o",
    "llama4",
    "kanana2",
    "talkie",
    "minimax-m2",
    "seed-coder",
    "bailingmoe",
    "bailingmoe2",
    "llada-moe",
    "ufakzeka",
];
