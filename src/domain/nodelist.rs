//! Slurm's compressed host lists (`node[01-03,07],gpu5,rack[1-2]-n[1-2]`), expanded in Slurm's
//! order without calling `scontrol` (the controller hooks have no `SLURM_CONF`, and a hook should
//! not fork tools it does not need).
//!
//! Grammar, as Slurm writes it: terms separated by commas outside brackets; a term is text with
//! any number of bracket groups; a group holds comma-separated numbers or `lo-hi` ranges, and
//! the width of `lo` sets the zero padding (`[08-10]` gives `08 09 10`). Several groups in one
//! term multiply out, the first varying slowest.

use std::fmt;

/// Why a host list could not be expanded; the caller sends it unexpanded instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeListError(String);

impl fmt::Display for NodeListError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NodeListError {}

fn err(message: impl Into<String>) -> NodeListError {
    NodeListError(message.into())
}

/// Expands `list` into host names, keeping order and dropping nothing; at most `max` names.
pub fn expand(list: &str, max: usize) -> Result<Vec<String>, NodeListError> {
    let mut out = Vec::new();
    for term in split_terms(list.trim())? {
        if term.is_empty() {
            continue;
        }
        expand_term(term, max, &mut out)?;
    }
    Ok(out)
}

/// Splits at commas that are not inside brackets.
fn split_terms(list: &str) -> Result<Vec<&str>, NodeListError> {
    let mut terms = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in list.char_indices() {
        match c {
            '[' if depth == 0 => depth = 1,
            '[' => return Err(err("nested brackets")),
            ']' if depth == 1 => depth = 0,
            ']' => return Err(err("unbalanced ]")),
            ',' if depth == 0 => {
                terms.push(&list[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(err("unbalanced ["));
    }
    terms.push(&list[start..]);
    Ok(terms)
}

/// One term: literal text between bracket groups, each group a list of numbers.
fn expand_term(term: &str, max: usize, out: &mut Vec<String>) -> Result<(), NodeListError> {
    // Parts: literal, group, literal, group, ..., literal.
    let mut literals = Vec::new();
    let mut groups: Vec<Vec<String>> = Vec::new();
    let mut rest = term;
    while let Some(open) = rest.find('[') {
        let close = rest[open..]
            .find(']')
            .map(|c| open + c)
            .ok_or_else(|| err("unbalanced ["))?;
        literals.push(&rest[..open]);
        groups.push(expand_group(&rest[open + 1..close], max)?);
        rest = &rest[close + 1..];
    }
    literals.push(rest);
    if groups.is_empty() {
        return push(out, term.to_owned(), max);
    }
    // Odometer over the groups, the last one turning fastest.
    let mut idx = vec![0usize; groups.len()];
    loop {
        let mut name = String::from(literals[0]);
        for (g, i) in idx.iter().enumerate() {
            name.push_str(&groups[g][*i]);
            name.push_str(literals[g + 1]);
        }
        push(out, name, max)?;
        let mut g = groups.len();
        loop {
            if g == 0 {
                return Ok(());
            }
            g -= 1;
            idx[g] += 1;
            if idx[g] < groups[g].len() {
                break;
            }
            idx[g] = 0;
        }
    }
}

fn push(out: &mut Vec<String>, name: String, max: usize) -> Result<(), NodeListError> {
    if out.len() >= max {
        return Err(err(format!("more than {max} hosts")));
    }
    out.push(name);
    Ok(())
}

/// `01-03,07` into `01 02 03 07`.
fn expand_group(group: &str, max: usize) -> Result<Vec<String>, NodeListError> {
    let mut out = Vec::new();
    for item in group.split(',') {
        let (lo, hi) = item.split_once('-').unwrap_or((item, item));
        let digits =
            |s: &str| !s.is_empty() && s.len() <= 18 && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(lo) || !digits(hi) {
            return Err(err(format!("bad range {item:?}")));
        }
        let width = lo.len();
        let (a, b): (u64, u64) = match (lo.parse(), hi.parse()) {
            (Ok(a), Ok(b)) if a <= b => (a, b),
            _ => return Err(err(format!("bad range {item:?}"))),
        };
        if b - a >= max as u64 {
            return Err(err(format!("more than {max} hosts")));
        }
        for n in a..=b {
            push(&mut out, format!("{n:0width$}"), max)?;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(list: &str) -> Vec<String> {
        expand(list, 10_000).unwrap()
    }

    #[test]
    fn plain_names_and_single_ranges() {
        assert_eq!(ex("node1"), ["node1"]);
        assert_eq!(ex("node1,node2"), ["node1", "node2"]);
        assert_eq!(ex("node[1-3]"), ["node1", "node2", "node3"]);
        assert_eq!(ex(" n[1-2] "), ["n1", "n2"]);
        assert_eq!(ex(""), Vec::<String>::new());
    }

    #[test]
    fn several_ranges_and_zero_padding() {
        assert_eq!(
            ex("node[01-03,07]"),
            ["node01", "node02", "node03", "node07"]
        );
        assert_eq!(ex("n[08-11]"), ["n08", "n09", "n10", "n11"]);
        assert_eq!(ex("n[098-100]"), ["n098", "n099", "n100"]);
        assert_eq!(ex("n[9-10]"), ["n9", "n10"]);
    }

    #[test]
    fn several_terms_and_several_groups() {
        assert_eq!(
            ex("node[01-02],gpu5,a[1-2]"),
            ["node01", "node02", "gpu5", "a1", "a2"]
        );
        assert_eq!(
            ex("rack[1-2]-n[01-02]"),
            ["rack1-n01", "rack1-n02", "rack2-n01", "rack2-n02"]
        );
        assert_eq!(ex("c[1-2]x"), ["c1x", "c2x"]);
        assert_eq!(
            ex("cn[1,3],gn[01-02]-ib"),
            ["cn1", "cn3", "gn01-ib", "gn02-ib"]
        );
    }

    #[test]
    fn malformed_lists_are_errors_not_guesses() {
        for bad in [
            "node[1-3",
            "node1-3]",
            "node[a-b]",
            "node[3-1]",
            "node[]",
            "node[1-]",
            "n[[1-2]]",
            "n[1--2]",
        ] {
            assert!(expand(bad, 100).is_err(), "{bad}");
        }
    }

    #[test]
    fn huge_lists_are_refused_before_they_are_built() {
        assert!(expand("n[1-100]", 99).is_err());
        assert_eq!(expand("n[1-100]", 100).unwrap().len(), 100);
        assert!(expand("n[0-999999999999]", 65_536).is_err());
        assert!(expand("a[1-300]b[1-300]", 65_536).is_err());
    }
}
