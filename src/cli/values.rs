//! Value parsers for the numeric flags. Each takes values that look like
//! negative numbers (`-c -5`) so that a wrong value gets a range error that
//! names it, not clap's advice to write `-- -5`; the sampling flags check
//! their range with the same function as `/set` and models.toml.

use std::str::FromStr;

use crate::cli::model_args::List;
use crate::engine::load::MAX_CTX;
use crate::engine::sampler::check_option;

/// A number, or what kind of number was wanted.
fn number<T: FromStr>(s: &str, what: &str) -> Result<T, String> {
    s.trim().parse::<T>().map_err(|_| format!("not {what}"))
}

/// `-c`: 0 (the model's own) or a count of tokens up to [`MAX_CTX`].
pub fn ctx_size(s: &str) -> Result<usize, String> {
    let range = format!("give 0 (the model's own) or a number of tokens up to {MAX_CTX}");
    match s.trim().parse::<i128>() {
        Ok(n) if (0..=MAX_CTX as i128).contains(&n) => Ok(n as usize),
        Ok(_) => Err(format!("out of range: {range}")),
        Err(_) => Err(format!("not a number: {range}")),
    }
}

/// `-t`: one count of threads, or (bench) a list of them, each 1 or more.
pub fn threads(s: &str) -> Result<List<usize>, String> {
    let list: List<i64> = s.parse()?;
    list.0
        .iter()
        .map(|&t| {
            usize::try_from(t)
                .ok()
                .filter(|&t| t >= 1)
                .ok_or_else(|| format!("{t} is out of range: give 1 or more threads"))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(List)
}

/// A sampling flag's value, checked against the option's range.
pub fn sampling<T>(key: &'static str) -> impl Fn(&str) -> Result<T, String> + Clone
where
    T: FromStr + Into<f64> + Copy,
{
    move |s: &str| {
        let v: T = number(s, "a number")?;
        check_option(key, v.into())?;
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_checked_and_named() {
        assert_eq!(ctx_size("0"), Ok(0));
        assert_eq!(ctx_size("4096"), Ok(4096));
        assert!(ctx_size("-5").unwrap_err().contains("out of range"));
        assert!(ctx_size("b").unwrap_err().contains("not a number"));
        assert_eq!(threads("4,8").unwrap().0, [4, 8]);
        assert!(threads("-1").unwrap_err().contains("-1 is out of range"));
        assert!(threads("0").is_err());
        let temp = sampling::<f32>("temp");
        assert_eq!(temp("0.5"), Ok(0.5));
        for bad in ["-1", "nan", "inf", "hot"] {
            assert!(temp(bad).is_err(), "{bad}");
        }
        assert!(sampling::<f32>("top-p")("2").is_err());
        assert!(sampling::<f32>("min-p")("2").is_err());
        assert!(sampling::<f32>("repeat-penalty")("0").is_err());
        assert!(sampling::<i32>("top-k")("-3").is_err());
        assert_eq!(sampling::<i32>("repeat-last-n")("-1"), Ok(-1));
    }
}
