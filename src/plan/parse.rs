//! From TOML text to a [`Plan`], collecting every problem instead of stopping at the first.
//!
//! serde stops at the first error. To report them all, the document is parsed once into a
//! span-keeping tree; then the typed deserialization is retried, each time recording the error
//! and removing the key that caused it, until it succeeds or an error cannot be stepped over.

use std::collections::HashSet;
use std::ops::Range;

use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use super::error::Problem;

/// One step of a key path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Seg {
    /// A table key.
    Key(String),
    /// An array index.
    Index(usize),
}

/// Renders a key path as users write it: `postgres[0].source.port`.
pub(crate) fn display_path(segs: &[Seg]) -> String {
    let mut out = String::new();
    for seg in segs {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// The plan text, for turning byte offsets into lines and columns.
pub(crate) struct SourceText<'a> {
    text: &'a str,
}

impl<'a> SourceText<'a> {
    pub(crate) fn new(text: &'a str) -> Self {
        SourceText { text }
    }

    /// 1-based line and column of a byte offset.
    pub(crate) fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text[..floor_char_boundary(self.text, offset)];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        (line, column)
    }

    /// A problem located at `span` (or unlocated).
    pub(crate) fn problem(
        &self,
        key: String,
        span: Option<Range<usize>>,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> Problem {
        let (line, column) = match span {
            Some(span) => {
                let (l, c) = self.line_col(span.start);
                (Some(l), Some(c))
            }
            None => (None, None),
        };
        Problem {
            key,
            line,
            column,
            message: message.into(),
            fix: fix.into(),
        }
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Finds the span of the key (or, for array elements, the value) a path points to.
pub(crate) fn locate(root: &DeTable<'_>, segs: &[Seg]) -> Option<Range<usize>> {
    let mut table = root;
    let mut value: Option<&Spanned<DeValue<'_>>> = None;
    let mut best: Option<Range<usize>> = None;
    for seg in segs {
        match seg {
            Seg::Key(k) => {
                if let Some(v) = value {
                    match v.get_ref() {
                        DeValue::Table(t) => table = t,
                        _ => return best,
                    }
                }
                let (key, v) = table.get_key_value(k.as_str())?;
                best = Some(key.span());
                value = Some(v);
            }
            Seg::Index(i) => {
                let DeValue::Array(items) = value?.get_ref() else {
                    return best;
                };
                let item = items.get(*i)?;
                best = Some(item.span());
                value = Some(item);
            }
        }
    }
    best
}

/// The table `parent` leads to (keys, each maybe followed by array indices).
fn table_at<'t, 'a>(root: &'t mut DeTable<'a>, parent: &[Seg]) -> Option<&'t mut DeTable<'a>> {
    let mut table = root;
    let mut i = 0;
    while i < parent.len() {
        let Seg::Key(k) = &parent[i] else { return None };
        let mut v = table.get_mut(k.as_str())?.get_mut();
        while let Some(Seg::Index(idx)) = parent.get(i + 1) {
            let DeValue::Array(items) = v else {
                return None;
            };
            v = items.get_mut(*idx)?.get_mut();
            i += 1;
        }
        let DeValue::Table(t) = v else { return None };
        table = t;
        i += 1;
    }
    Some(table)
}

/// Removes the table key a path ends in (array indices at the end are stepped back over).
/// Returns the path of the removed key.
fn remove_key(root: &mut DeTable<'_>, segs: &[Seg]) -> Option<Vec<Seg>> {
    let last_key = segs.iter().rposition(|s| matches!(s, Seg::Key(_)))?;
    let Seg::Key(key) = &segs[last_key] else {
        return None;
    };
    table_at(root, &segs[..last_key])?.remove(key.as_str())?;
    Some(segs[..=last_key].to_vec())
}

/// Sets the table key a path ends in to `value` (creating it); `None` when the path does not
/// end in a key or does not lead through tables and arrays that exist.
fn set_key<'a>(root: &mut DeTable<'a>, segs: &[Seg], value: DeValue<'a>) -> Option<()> {
    let (Seg::Key(key), parent) = segs.split_last()? else {
        return None;
    };
    table_at(root, parent)?.insert(
        Spanned::new(0..0, std::borrow::Cow::Owned(key.clone())),
        Spanned::new(0..0, value),
    );
    Some(())
}

/// The stand-in values tried, in turn, for a required key that is missing, so that the rest of
/// its entry is still read (each one's own problems reported); a stand-in never reaches a plan
/// that is used.
fn stand_in<'a>(n: usize) -> Option<DeValue<'a>> {
    match n {
        0 => Some(DeValue::Table(DeTable::default())),
        1 => Some(DeValue::Array(toml::de::DeArray::new())),
        2 => Some(DeValue::String(std::borrow::Cow::Borrowed(""))),
        3 => Some(DeValue::Boolean(false)),
        _ => None,
    }
}

/// What a serde message says, in a form we can act on.
enum SerdeMessage {
    UnknownField {
        field: String,
        allowed: Vec<String>,
    },
    MissingField {
        field: String,
    },
    UnknownVariant {
        variant: String,
        allowed: Vec<String>,
    },
    Other,
}

fn backticked(text: &str) -> Vec<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

fn classify(message: &str) -> SerdeMessage {
    let names = backticked(message);
    if message.starts_with("unknown field") && !names.is_empty() {
        SerdeMessage::UnknownField {
            field: names[0].clone(),
            allowed: names[1..].to_vec(),
        }
    } else if message.starts_with("missing field") && !names.is_empty() {
        SerdeMessage::MissingField {
            field: names[0].clone(),
        }
    } else if message.starts_with("unknown variant") && !names.is_empty() {
        SerdeMessage::UnknownVariant {
            variant: names[0].clone(),
            allowed: names[1..].to_vec(),
        }
    } else {
        SerdeMessage::Other
    }
}

/// Levenshtein distance, for "did you mean" hints.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The closest allowed name, when it is close enough to be a likely typo.
pub(crate) fn closest<'a>(word: &str, allowed: &'a [String]) -> Option<&'a str> {
    allowed
        .iter()
        .map(|a| (edit_distance(word, a), a))
        .filter(|(d, a)| *d <= 2.max(a.len() / 3) && *d < a.len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, a)| a.as_str())
}

fn list(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn where_to_add(parent: &[Seg]) -> String {
    if parent.is_empty() {
        "the top level of the plan".to_owned()
    } else {
        format!("`{}`", display_path(parent))
    }
}

fn missing_field_fix(parent: &[Seg], field: &str) -> String {
    if parent.is_empty() && field == "migration" {
        return "add a `[migration]` table with `name = \"...\"` and `state_dir = \"/var/lib/cutover/NAME\"`".to_owned();
    }
    format!("add `{field} = ...` to {}", where_to_add(parent))
}

/// Plain words for serde's type names.
fn humanize_expected(expected: &str) -> String {
    let e = expected.trim();
    let words = match e {
        "u8" | "u16" | "u32" | "u64" | "usize" => "a whole number (no quotes)",
        "i8" | "i16" | "i32" | "i64" => "a whole number (no quotes)",
        "f32" | "f64" => "a number",
        "a boolean" => "`true` or `false` (no quotes)",
        "a string" => "a quoted string",
        "a sequence" => "an array, e.g. `[\"a\", \"b\"]`",
        "a map" => "a table",
        _ => return e.to_owned(),
    };
    match e {
        "u16" => format!("{words} from 0 to 65535"),
        _ => words.to_owned(),
    }
}

/// The fix for an error serde or a custom deserializer reported.
fn fix_for_message(message: &str) -> (String, String) {
    // Custom errors of ours carry their own fix after "; fix: ".
    if let Some((msg, fix)) = message.split_once("; fix: ") {
        return (msg.to_owned(), fix.to_owned());
    }
    if (message.starts_with("invalid type") || message.starts_with("invalid value"))
        && let Some((_, expected)) = message.rsplit_once("expected ")
    {
        return (
            message.to_owned(),
            format!("write {}", humanize_expected(expected)),
        );
    }
    (message.to_owned(), "correct the value".to_owned())
}

fn join(prefix: &[Seg], segs: &[Seg]) -> Vec<Seg> {
    prefix.iter().chain(segs).cloned().collect()
}

/// Deserializes the table `root` (found at `prefix` in the document) as `T`, recording every
/// problem serde finds into `problems`.
///
/// Returns the value when deserialization eventually succeeded, possibly after removing the keys
/// it reported (so later semantic checks still see the rest of the table), with the paths of
/// the stand-ins given for missing required keys (non-empty: the value is only for checking the
/// rest of the entry; problems under those paths are the stand-ins', never reported).
pub(crate) fn deserialize_collecting<T: DeserializeOwned>(
    src: &SourceText<'_>,
    original: &DeTable<'_>,
    prefix: &[Seg],
    mut root: Spanned<DeTable<'_>>,
    problems: &mut Vec<Problem>,
) -> Option<(T, Vec<String>)> {
    let mut removed: HashSet<Vec<Seg>> = HashSet::new();
    // Stand-ins given for missing required keys: path -> which stand-in (see `stand_in`).
    let mut filled: std::collections::HashMap<Vec<Seg>, usize> = Default::default();
    let filled_paths = |filled: &std::collections::HashMap<Vec<Seg>, usize>| {
        filled
            .keys()
            .map(|p| display_path(&join(prefix, p)))
            .collect::<Vec<_>>()
    };
    // Each round removes one key, so this bound is never reached by a real plan.
    for _ in 0..256 {
        let span = root.span();
        let value = Spanned::new(span, DeValue::Table(root.get_ref().clone()));
        let err = match serde_path_to_error::deserialize::<_, T>(ValueDeserializer::from(value)) {
            Ok(v) => return Some((v, filled_paths(&filled))),
            Err(err) => err,
        };
        let mut segs: Vec<Seg> = err
            .path()
            .iter()
            .filter_map(|s| match s {
                serde_path_to_error::Segment::Seq { index } => Some(Seg::Index(*index)),
                serde_path_to_error::Segment::Map { key } => Some(Seg::Key(key.clone())),
                _ => None,
            })
            .collect();
        let inner = err.into_inner();
        let message = inner.message().to_owned();
        let err_span = inner.span();
        // Inside a stand-in: fill what it lacks, or try the next kind of value; silently.
        let under = filled
            .keys()
            .filter(|p| segs.starts_with(p))
            .max_by_key(|p| p.len())
            .cloned();
        if let Some(placeholder) = under {
            match classify(&message) {
                SerdeMessage::MissingField { field } => {
                    let mut missing = segs.clone();
                    missing.push(Seg::Key(field));
                    if let Some(v) = stand_in(0)
                        && set_key(root.get_mut(), &missing, v).is_some()
                    {
                        filled.insert(missing, 0);
                        continue;
                    }
                    return None;
                }
                _ if segs == placeholder => {
                    let next = filled[&placeholder] + 1;
                    if let Some(v) = stand_in(next)
                        && set_key(root.get_mut(), &placeholder, v).is_some()
                    {
                        filled.insert(placeholder, next);
                        continue;
                    }
                    return None;
                }
                _ => return None,
            }
        }
        let to_remove: Vec<Seg> = match classify(&message) {
            SerdeMessage::UnknownField { field, allowed } => {
                if segs.last() != Some(&Seg::Key(field.clone())) {
                    segs.push(Seg::Key(field.clone()));
                }
                let fix = match closest(&field, &allowed) {
                    Some(best) => {
                        format!("did you mean `{best}`? (allowed here: {})", list(&allowed))
                    }
                    None if allowed.is_empty() => "remove it".to_owned(),
                    None => format!("remove it; allowed here: {}", list(&allowed)),
                };
                let full = join(prefix, &segs);
                problems.push(src.problem(
                    display_path(&full),
                    locate(original, &full).or(err_span),
                    format!("unknown key `{field}`"),
                    fix,
                ));
                segs
            }
            SerdeMessage::MissingField { field } => {
                let mut missing = segs.clone();
                missing.push(Seg::Key(field.clone()));
                if !removed.contains(&missing) {
                    let full = join(prefix, &segs);
                    problems.push(src.problem(
                        display_path(&join(prefix, &missing)),
                        locate(original, &full).or(err_span),
                        format!("required key `{field}` is missing"),
                        missing_field_fix(&full, &field),
                    ));
                }
                // Step over it with a stand-in, so the rest of the entry is still read; where
                // none can be put, by dropping the table that lacks the key (at the top there
                // is nothing left to drop).
                if !removed.contains(&missing)
                    && let Some(v) = stand_in(0)
                    && set_key(root.get_mut(), &missing, v).is_some()
                {
                    filled.insert(missing, 0);
                    continue;
                }
                if segs.is_empty() {
                    return None;
                }
                segs
            }
            other => {
                let full = join(prefix, &segs);
                let (message, fix) = match other {
                    SerdeMessage::UnknownVariant { variant, allowed } => (
                        message.clone(),
                        match closest(&variant, &allowed) {
                            Some(best) => {
                                format!("did you mean `{best}`? (one of {})", list(&allowed))
                            }
                            None => format!("use one of {}", list(&allowed)),
                        },
                    ),
                    _ => fix_for_message(&message),
                };
                problems.push(src.problem(
                    display_path(&full),
                    locate(original, &full).or(err_span),
                    message,
                    fix,
                ));
                segs
            }
        };
        match remove_key(root.get_mut(), &to_remove) {
            Some(key) => {
                removed.insert(key);
            }
            None => return None,
        }
    }
    None
}

/// Takes the array of tables `key` out of `root` and deserializes each element on its own, so a
/// problem in one element does not hide problems in the next.
pub(crate) fn collect_section<T: DeserializeOwned>(
    src: &SourceText<'_>,
    original: &DeTable<'_>,
    root: &mut DeTable<'_>,
    key: &str,
    problems: &mut Vec<Problem>,
    stand_ins: &mut Vec<String>,
) -> Section<T> {
    let Some(value) = root.remove(key) else {
        return Section {
            items: Vec::new(),
            complete: true,
        };
    };
    let at = vec![Seg::Key(key.to_owned())];
    let span = value.span();
    let DeValue::Array(items) = value.into_inner() else {
        problems.push(src.problem(
            key.to_owned(),
            locate(original, &at).or(Some(span)),
            format!("`{key}` must be an array of tables"),
            format!("write each entry as its own `[[{key}]]` table"),
        ));
        return Section {
            items: Vec::new(),
            complete: false,
        };
    };
    let mut out = Vec::new();
    let mut ok = true;
    for (i, item) in items.into_iter().enumerate() {
        let item_span = item.span();
        let prefix = vec![Seg::Key(key.to_owned()), Seg::Index(i)];
        match item.into_inner() {
            DeValue::Table(table) => {
                let table = Spanned::new(item_span, table);
                match deserialize_collecting::<T>(src, original, &prefix, table, problems) {
                    Some((v, filled)) if filled.is_empty() => out.push(v),
                    Some((v, filled)) => {
                        // Kept for the semantic checks of its other keys.
                        out.push(v);
                        stand_ins.extend(filled);
                        ok = false;
                    }
                    None => ok = false,
                }
            }
            _ => {
                problems.push(src.problem(
                    display_path(&prefix),
                    Some(item_span),
                    format!("each `{key}` entry must be a table"),
                    format!("write each entry as its own `[[{key}]]` table"),
                ));
                ok = false;
            }
        }
    }
    Section {
        items: out,
        complete: ok,
    }
}

/// A section's entries that parsed (with stand-ins, for checking only), and whether all did.
pub(crate) struct Section<T> {
    /// The entries.
    pub items: Vec<T>,
    /// Every entry parsed, without a stand-in.
    pub complete: bool,
}

/// Keys whose names say they hold a secret, and the key prefix the plan uses for them instead.
fn secret_key_canonical(key: &str) -> Option<&'static str> {
    let k = key.to_ascii_lowercase();
    if k.ends_with("_env") || k.ends_with("_file") || k == "passfile" || k == "option_file" {
        return None;
    }
    Some(match k.as_str() {
        "password" | "passwd" | "pass" | "pwd" => "password",
        "token" | "api_token" | "apitoken" | "bearer_token" => "api_token",
        "api_key" | "apikey" => "api_key",
        "secret" | "key_secret" | "tsig_secret" | "tsig_key" => "key_secret",
        "secret_access_key" | "aws_secret_access_key" => "secret_access_key",
        _ if k.ends_with("_password") => "password",
        _ if k.ends_with("_token") => "api_token",
        _ if k.ends_with("_secret") => "key_secret",
        _ => return None,
    })
}

/// Reports and removes every key that holds a secret inline.
pub(crate) fn take_inline_secrets(
    src: &SourceText<'_>,
    table: &mut DeTable<'_>,
    path: &mut Vec<Seg>,
    problems: &mut Vec<Problem>,
) {
    let keys: Vec<(String, Range<usize>)> = table
        .iter()
        .map(|(k, _)| (k.get_ref().to_string(), k.span()))
        .collect();
    for (key, span) in keys {
        path.push(Seg::Key(key.clone()));
        if let Some(canonical) = secret_key_canonical(&key) {
            problems.push(src.problem(
                display_path(path),
                Some(span),
                format!("`{key}` holds a secret inline; plans must not contain secrets"),
                format!(
                    "remove `{key}`; put the value in an environment variable and set \
                     `{canonical}_env = \"VARIABLE\"`, or in a file only you can read and set \
                     `{canonical}_file = \"/path/to/file\"`"
                ),
            ));
            table.remove(key.as_str());
        } else if let Some(value) = table.get_mut(key.as_str()) {
            walk_value(src, value.get_mut(), path, problems);
        }
        path.pop();
    }
}

fn walk_value(
    src: &SourceText<'_>,
    value: &mut DeValue<'_>,
    path: &mut Vec<Seg>,
    problems: &mut Vec<Problem>,
) {
    match value {
        DeValue::Table(t) => take_inline_secrets(src, t, path, problems),
        DeValue::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                path.push(Seg::Index(i));
                walk_value(src, item.get_mut(), path, problems);
                path.pop();
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_are_one_based() {
        let src = SourceText::new("a = 1\nbb = 2\n");
        assert_eq!(src.line_col(0), (1, 1));
        assert_eq!(src.line_col(6), (2, 1));
        assert_eq!(src.line_col(8), (2, 3));
    }

    #[test]
    fn closest_suggests_typos_only() {
        let allowed = vec!["dbname".to_owned(), "host".to_owned(), "port".to_owned()];
        assert_eq!(closest("dbnmae", &allowed), Some("dbname"));
        assert_eq!(closest("prot", &allowed), Some("port"));
        assert_eq!(closest("completely_else", &allowed), None);
    }

    #[test]
    fn secret_names_are_recognised_but_references_are_not() {
        assert_eq!(secret_key_canonical("password"), Some("password"));
        assert_eq!(secret_key_canonical("api_key"), Some("api_key"));
        assert_eq!(secret_key_canonical("token"), Some("api_token"));
        assert_eq!(secret_key_canonical("password_env"), None);
        assert_eq!(secret_key_canonical("api_token_file"), None);
        assert_eq!(secret_key_canonical("key_name"), None);
        assert_eq!(secret_key_canonical("passfile"), None);
    }
}
