//! Every parameter of each PostgreSQL major pgpilot ships an image for, from tables generated
//! from those images (`./just pg-parameters`), and the check of a spec's parameter against
//! them. A value passes when PostgreSQL would take it *and* Patroni would write it to
//! postgresql.conf unchanged: Patroni drops unknown names and bad values with a line in the
//! pod log, and clamps numbers out of range, which is how typos used to vanish silently.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::LazyLock;

static TABLES: LazyLock<[Table; 2]> = LazyLock::new(|| {
    [
        Table::parse(15, include_str!("pg15.tsv")),
        Table::parse(17, include_str!("pg17.tsv")),
    ]
});

/// The table of `major`, if pgpilot has one (15 and 17: the majors it builds images for).
pub fn table(major: i32) -> Option<&'static Table> {
    TABLES
        .iter()
        .find(|t| i64::from(t.major) == i64::from(major))
}

/// Every table.
pub fn tables() -> &'static [Table] {
    TABLES.as_slice()
}

/// `pg_settings.vartype`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Bool,
    Integer,
    Real,
    String,
    Enum,
}

/// `pg_settings.context`: when a new value takes effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Context {
    /// Fixed when PostgreSQL is built or the cluster initialised.
    Internal,
    /// On a restart.
    Postmaster,
    /// On a reload (some also per session, or for new sessions).
    Reload,
}

/// One parameter of one major.
#[derive(Clone, Debug)]
pub struct Parameter {
    pub name: &'static str,
    pub kind: Kind,
    pub context: Context,
    /// `pg_settings.unit`: the unit of a bare number (`8kB`, `ms`, …), empty for none.
    unit: &'static str,
    min: Option<f64>,
    max: Option<f64>,
    /// Enums: every spelling accepted, lower-case.
    values: Vec<String>,
}

/// The parameters of one major.
#[derive(Debug)]
pub struct Table {
    pub major: u32,
    /// By lower-case name: PostgreSQL's names are case-insensitive.
    by_name: BTreeMap<String, Parameter>,
    /// The extensions' prefixes (`auto_explain.`, …), see [`Table::prefixes`].
    prefixes: Vec<String>,
}

/// Where a valid value takes effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applies {
    OnReload,
    /// Every instance restarts (pgpilot does it, one at a time, replicas first).
    OnRestart,
}

/// Why a parameter cannot go to PostgreSQL as given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    Unknown {
        name: String,
        major: u32,
        suggestion: Option<&'static str>,
    },
    Fixed {
        name: String,
    },
    Invalid {
        name: String,
        value: String,
        expected: String,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Unknown {
                name,
                major,
                suggestion,
            } => {
                write!(f, "{name} is not a PostgreSQL {major} parameter")?;
                match suggestion {
                    Some(s) => write!(f, " (did you mean {s}?)"),
                    None => Ok(()),
                }
            }
            Problem::Fixed { name } => write!(
                f,
                "{name} cannot be set: PostgreSQL fixes it when it is built or initialised"
            ),
            Problem::Invalid {
                name,
                value,
                expected,
            } => {
                // Values can be long (4096 characters): the start says which one is meant.
                let shown: String = value.chars().take(64).collect();
                let more = if shown.len() < value.len() { "…" } else { "" };
                write!(f, "{name}: {shown:?}{more} is not valid: {expected}")
            }
        }
    }
}

impl std::error::Error for Problem {}

/// The spellings of a boolean both PostgreSQL and Patroni take (PostgreSQL also takes
/// prefixes such as `t`; Patroni drops those).
pub const BOOL_VALUES: [&str; 8] = ["on", "off", "true", "false", "yes", "no", "1", "0"];

impl Table {
    /// Parses a generated table; a line that does not parse is left out (the unit tests
    /// check none is).
    fn parse(major: u32, text: &'static str) -> Table {
        let by_name: BTreeMap<String, Parameter> = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .filter_map(Parameter::parse)
            .map(|p| (p.name.to_ascii_lowercase(), p))
            .collect();
        let mut prefixes: Vec<String> = by_name
            .keys()
            .filter_map(|n| n.split_once('.').map(|(p, _)| format!("{p}.")))
            .collect();
        prefixes.dedup();
        Table {
            major,
            by_name,
            prefixes,
        }
    }

    /// Lower-case names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }

    pub fn parameters(&self) -> impl Iterator<Item = &Parameter> {
        self.by_name.values()
    }

    /// The prefixes (`auto_explain.`, …) of the extensions in the table: PostgreSQL drops an
    /// unknown name under a loaded extension's prefix; other dotted names are free-form.
    pub fn prefixes(&self) -> &[String] {
        &self.prefixes
    }

    /// Whether `name = value` reaches PostgreSQL as given, and when it takes effect.
    pub fn check(&self, name: &str, value: &str) -> Result<Applies, Problem> {
        let lower = name.to_ascii_lowercase();
        let Some(p) = self.by_name.get(&lower) else {
            let free_form = lower
                .split_once('.')
                .is_some_and(|(prefix, _)| !self.prefixes.contains(&format!("{prefix}.")));
            if free_form {
                return Ok(Applies::OnReload);
            }
            return Err(Problem::Unknown {
                name: name.to_owned(),
                major: self.major,
                suggestion: self.closest(&lower),
            });
        };
        if p.context == Context::Internal {
            return Err(Problem::Fixed {
                name: name.to_owned(),
            });
        }
        let invalid = |expected: String| Problem::Invalid {
            name: name.to_owned(),
            value: value.to_owned(),
            expected,
        };
        if value.contains(['\n', '\r', '\0']) {
            return Err(invalid(
                "one line expected (postgresql.conf has one value per line)".into(),
            ));
        }
        // Patroni checks the names it knows (not the extensions' dotted ones, which only
        // PostgreSQL reads) and drops what its reader does not take.
        let reader = if p.name.contains('.') {
            Reader::Postgres
        } else {
            Reader::PatroniAndPostgres
        };
        p.check(value, reader).map_err(invalid)?;
        Ok(match p.context {
            Context::Postmaster => Applies::OnRestart,
            _ => Applies::OnReload,
        })
    }

    /// A name one or two typos away (more for long names).
    fn closest(&self, name: &str) -> Option<&'static str> {
        let budget = (name.len() / 6).max(1);
        self.by_name
            .values()
            .map(|p| {
                (
                    strsim::levenshtein(name, &p.name.to_ascii_lowercase()),
                    p.name,
                )
            })
            .filter(|(d, _)| *d <= budget)
            .min_by_key(|(d, _)| *d)
            .map(|(_, n)| n)
    }
}

impl Parameter {
    fn parse(line: &'static str) -> Option<Parameter> {
        let f: Vec<&'static str> = line.split('\t').collect();
        let [name, kind, context, unit, min, max, values] = f.as_slice() else {
            return None;
        };
        let kind = match *kind {
            "bool" => Kind::Bool,
            "integer" => Kind::Integer,
            "real" => Kind::Real,
            "string" => Kind::String,
            "enum" => Kind::Enum,
            _ => return None,
        };
        let context = match *context {
            "internal" => Context::Internal,
            "postmaster" => Context::Postmaster,
            "sighup" | "superuser-backend" | "backend" | "superuser" | "user" => Context::Reload,
            _ => return None,
        };
        let bound = |s: &str| s.parse::<f64>().ok();
        Some(Parameter {
            name,
            kind,
            context,
            unit,
            min: bound(min),
            max: bound(max),
            values: match kind {
                Kind::Enum if !values.is_empty() => {
                    values.split(',').map(str::to_ascii_lowercase).collect()
                }
                _ => Vec::new(),
            },
        })
    }

    /// Enums' accepted spellings, lower-case (empty for other kinds).
    pub fn values(&self) -> &[String] {
        &self.values
    }

    /// The value as PostgreSQL's parser (guc.c) reads it, and Patroni's before it when it
    /// checks the parameter; `Err` says what was expected.
    fn check(&self, value: &str, reader: Reader) -> Result<(), String> {
        let lower = value.to_ascii_lowercase();
        match self.kind {
            Kind::String => Ok(()),
            Kind::Bool => (BOOL_VALUES.contains(&lower.as_str())
                || reader == Reader::Postgres && postgres_bool(&lower))
            .then_some(())
            .ok_or_else(|| "on or off (or true/false, yes/no, 1/0)".to_owned()),
            Kind::Enum => self
                .values
                .contains(&value.to_ascii_lowercase())
                .then_some(())
                .ok_or_else(|| match self.values.as_slice() {
                    [] => "nothing: Patroni does not pass it to PostgreSQL".to_owned(),
                    values => format!("one of {}", values.join(", ")),
                }),
            Kind::Integer | Kind::Real => self.check_number(value, reader),
        }
    }

    fn check_number(&self, value: &str, reader: Reader) -> Result<(), String> {
        let integer = self.kind == Kind::Integer;
        let what = if integer { "an integer" } else { "a number" };
        let units = unit_family(self.unit);
        let expected = || match units {
            Some(family) => format!(
                "{what}, with a unit among {} (no unit: {})",
                family
                    .iter()
                    .map(|(u, _)| *u)
                    .collect::<Vec<_>>()
                    .join(", "),
                self.unit
            ),
            None => format!("{what}, without a unit"),
        };
        let (number, rest) = match number::parse(value, integer, reader) {
            number::Parsed::Number(n, rest) => (n, rest),
            number::Parsed::Garbage => return Err(expected()),
            // A form of strtod's this parser does not follow (hex floats): Patroni's reader
            // drops it; PostgreSQL alone judges an extension's parameter.
            number::Parsed::Unsure if reader == Reader::Postgres => return Ok(()),
            number::Parsed::Unsure => return Err(expected()),
        };
        let rest = rest.trim_matches(number::is_space);
        let mut base = number;
        if !rest.is_empty() {
            let (Some(family), Some(base_size)) = (units, unit_size(self.unit)) else {
                return Err(expected());
            };
            let Some(i) = family.iter().position(|(u, _)| *u == rest) else {
                return Err(expected());
            };
            base = number * family[i].1 / base_size;
            // As guc.c's convert_to_base_unit: "30.1GB" is first rounded to a whole number of
            // the next smaller unit (MB), then to the parameter's own.
            if let Some((_, smaller)) = i.checked_sub(1).map(|j| family[j]) {
                let step = smaller / base_size;
                base = (base / step).round_ties_even() * step;
            }
        }
        if integer {
            base = base.round_ties_even();
            if !(f64::from(i32::MIN)..=f64::from(i32::MAX)).contains(&base) {
                return Err(format!("{what} within 32 bits"));
            }
        }
        // Large bounds of reals are printed with six significant digits (1.79769e+308):
        // allow for that rounding.
        let slack = |b: f64| {
            if !integer && b.abs() >= 1e6 {
                b.abs() * 1e-5
            } else {
                0.0
            }
        };
        let in_units = if self.unit.is_empty() {
            String::new()
        } else {
            format!(" (in units of {})", self.unit)
        };
        if let Some(min) = self.min.filter(|m| base < m - slack(*m)) {
            return Err(format!("at least {min}{in_units}"));
        }
        if let Some(max) = self.max.filter(|m| base > m + slack(*m)) {
            return Err(format!("at most {max}{in_units}"));
        }
        Ok(())
    }
}

/// Who reads a value on its way to the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reader {
    /// Patroni's validator, then PostgreSQL: the values both take.
    PatroniAndPostgres,
    /// PostgreSQL alone (an extension's parameter, which Patroni passes through).
    Postgres,
}

/// guc.c's parse_bool: a prefix of true, false, yes or no, `on`, `of`/`off`, `1` or `0`.
fn postgres_bool(lower: &str) -> bool {
    !lower.is_empty()
        && (["true", "false", "yes", "no"]
            .iter()
            .any(|w| w.starts_with(lower))
            || matches!(lower, "on" | "of" | "off" | "1" | "0"))
}

/// Units in ascending size (each one's "next smaller" is the one before).
const MEMORY: &[(&str, f64)] = &[
    ("B", 1.0),
    ("kB", 1024.0),
    ("MB", 1048576.0),
    ("GB", 1073741824.0),
    ("TB", 1099511627776.0),
];
const TIME: &[(&str, f64)] = &[
    ("us", 0.001),
    ("ms", 1.0),
    ("s", 1000.0),
    ("min", 60000.0),
    ("h", 3600000.0),
    ("d", 86400000.0),
];

/// The units a value of a parameter with base unit `unit` may carry (case-sensitive, as in
/// PostgreSQL).
fn unit_family(unit: &str) -> Option<&'static [(&'static str, f64)]> {
    let bare = unit.trim_start_matches(|c: char| c.is_ascii_digit());
    if MEMORY.iter().any(|(u, _)| *u == bare) {
        Some(MEMORY)
    } else if TIME.iter().any(|(u, _)| *u == bare) {
        Some(TIME)
    } else {
        None
    }
}

/// The size of a base unit such as `8kB`, in bytes or milliseconds.
fn unit_size(unit: &str) -> Option<f64> {
    let digits = unit.len() - unit.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let (count, bare) = unit.split_at(digits);
    let count = if count.is_empty() {
        1.0
    } else {
        count.parse().ok()?
    };
    let (_, size) = unit_family(unit)?.iter().find(|(u, _)| *u == bare)?;
    Some(count * size)
}

/// The numbers PostgreSQL's `parse_int` and `parse_real` read: C's `strtol` (base 0:
/// decimal, `0x` hex, leading-`0` octal), falling back to `strtod` at a `.` or exponent.
mod number {
    use super::Reader;

    pub enum Parsed<'a> {
        Number(f64, &'a str),
        Garbage,
        Unsure,
    }

    pub fn is_space(c: char) -> bool {
        matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r')
    }

    pub fn parse(value: &str, integer: bool, reader: Reader) -> Parsed<'_> {
        let strict = reader == Reader::PatroniAndPostgres;
        if !integer {
            return strtod(value, strict);
        }
        let s = value.trim_start_matches(is_space);
        let (sign, body) = match s.as_bytes().first() {
            Some(b'-') => (-1.0, &s[1..]),
            Some(b'+') => (1.0, &s[1..]),
            _ => (1.0, s),
        };
        // Patroni's reader takes a lower-case 0x only.
        let hex = body.starts_with("0x") || !strict && body.starts_with("0X");
        let (radix, digits) = if hex && body[2..].starts_with(|c: char| c.is_ascii_hexdigit()) {
            (16, &body[2..])
        } else if body.starts_with('0') {
            (8, body)
        } else {
            (10, body)
        };
        let end = digits
            .find(|c: char| !c.is_digit(radix))
            .unwrap_or(digits.len());
        let rest = &digits[end..];
        let parsed = i64::from_str_radix(&digits[..end], radix).ok();
        if rest.starts_with(['.', 'e', 'E']) || (end > 0 && parsed.is_none()) {
            return if radix == 16 {
                Parsed::Unsure
            } else {
                strtod(value, strict)
            };
        }
        match parsed {
            Some(n) => Parsed::Number(sign * n as f64, rest),
            None => Parsed::Garbage,
        }
    }

    fn strtod(value: &str, strict: bool) -> Parsed<'_> {
        let s = value.trim_start_matches(is_space);
        let unsigned = s.trim_start_matches(['+', '-']);
        if s.len() - unsigned.len() > 1 {
            return Parsed::Garbage;
        }
        if unsigned.starts_with("0x") || unsigned.starts_with("0X") {
            return Parsed::Unsure;
        }
        let lower = unsigned.to_ascii_lowercase();
        for (word, n) in [
            ("infinity", f64::INFINITY),
            ("inf", f64::INFINITY),
            ("nan", f64::NAN),
        ] {
            if lower.starts_with(word) {
                let n = if s.starts_with('-') { -n } else { n };
                return if n.is_nan() {
                    Parsed::Garbage
                } else {
                    Parsed::Number(n, &unsigned[word.len()..])
                };
            }
        }
        let b = unsigned.as_bytes();
        let digits = |from: usize| b[from..].iter().take_while(|c| c.is_ascii_digit()).count();
        let int = digits(0);
        let mut end = int;
        let mut frac = 0;
        // "100." is a number to strtod; Patroni's reader wants a digit after the point.
        if b.get(end) == Some(&b'.') && (digits(end + 1) > 0 || !strict) {
            frac = digits(end + 1);
            end += 1 + frac;
        }
        if int + frac == 0 {
            return Parsed::Garbage;
        }
        if matches!(b.get(end), Some(b'e' | b'E')) {
            let sign = usize::from(matches!(b.get(end + 1), Some(b'+' | b'-')));
            let exp = digits(end + 1 + sign);
            if exp > 0 {
                end += 1 + sign + exp;
            }
        }
        let sign_len = s.len() - unsigned.len();
        let nonzero = unsigned[..end]
            .split(['e', 'E'])
            .next()
            .is_some_and(|m| m.bytes().any(|c| (b'1'..=b'9').contains(&c)));
        match s[..sign_len + end].parse::<f64>() {
            // strtod's ERANGE: PostgreSQL refuses an overflow or an underflow.
            Ok(n) if n.is_infinite() => Parsed::Garbage,
            Ok(n) if nonzero && n.abs() < f64::MIN_POSITIVE => Parsed::Garbage,
            Ok(n) => Parsed::Number(n, &unsigned[end..]),
            Err(_) => Parsed::Garbage,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pg17() -> &'static Table {
        table(17).unwrap()
    }

    #[test]
    fn every_line_of_every_table_parses() {
        for (major, text) in [
            (15, include_str!("pg15.tsv")),
            (17, include_str!("pg17.tsv")),
        ] {
            let lines = text.lines().filter(|l| !l.starts_with('#')).count();
            let t = table(major).unwrap();
            assert_eq!(t.by_name.len(), lines, "PostgreSQL {major}");
            assert!(lines > 350, "PostgreSQL {major}: {lines} parameters");
        }
        assert!(table(16).is_none() && table(18).is_none());
    }

    #[test]
    fn names_are_known_case_insensitively_and_typos_get_a_suggestion() {
        let t = pg17();
        assert_eq!(t.check("shared_buffers", "1GB"), Ok(Applies::OnRestart));
        assert_eq!(t.check("Shared_Buffers", "1GB"), Ok(Applies::OnRestart));
        assert_eq!(t.check("work_mem", "64MB"), Ok(Applies::OnReload));
        let err = t.check("shared_buffer", "1GB").unwrap_err().to_string();
        assert_eq!(
            err,
            "shared_buffer is not a PostgreSQL 17 parameter (did you mean shared_buffers?)"
        );
        let err = t.check("frobnicate", "1").unwrap_err().to_string();
        assert_eq!(err, "frobnicate is not a PostgreSQL 17 parameter");
        // Removed in 17, still in 15: a major upgrade must not carry it.
        assert!(pg17().check("old_snapshot_threshold", "-1").is_err());
        assert!(
            table(15)
                .unwrap()
                .check("old_snapshot_threshold", "-1")
                .is_ok()
        );
    }

    #[test]
    fn dotted_names_are_free_unless_an_extension_of_the_image_owns_the_prefix() {
        let t = pg17();
        assert!(t.prefixes().contains(&"pg_stat_statements.".to_owned()));
        assert_eq!(
            t.check("pg_stat_statements.max", "10000"),
            Ok(Applies::OnRestart)
        );
        assert!(t.check("pg_stat_statements.maxx", "10000").is_err());
        assert!(t.check("pg_stat_statements.max", "lots").is_err());
        assert_eq!(t.check("myapp.tenant", "anything"), Ok(Applies::OnReload));
        // Patroni passes an extension's parameters through: PostgreSQL's own reading applies.
        assert!(t.check("auto_explain.log_analyze", "t").is_ok());
        assert!(t.check("pg_stat_statements.max", "100.").is_ok());
        assert!(
            t.check("pg_stat_statements.max", "0X64").is_ok(),
            "strtol reads 0X"
        );
    }

    #[test]
    fn fixed_parameters_and_multi_line_values_are_refused() {
        let t = pg17();
        assert!(matches!(
            t.check("block_size", "8192"),
            Err(Problem::Fixed { .. })
        ));
        let err = t.check("application_name", "a\nb").unwrap_err().to_string();
        assert!(err.contains("one line expected"), "{err}");
    }

    #[test]
    fn booleans_take_the_spellings_patroni_keeps() {
        let t = pg17();
        for ok in ["on", "OFF", "true", "False", "yes", "no", "1", "0"] {
            assert!(t.check("enable_seqscan", ok).is_ok(), "{ok}");
        }
        // PostgreSQL takes "t" and "of"; Patroni drops them from postgresql.conf.
        for bad in ["t", "of", "enable", " on", ""] {
            let err = t.check("enable_seqscan", bad).unwrap_err().to_string();
            assert!(
                err.ends_with("on or off (or true/false, yes/no, 1/0)"),
                "{err}"
            );
        }
    }

    #[test]
    fn enums_take_their_values_and_the_undocumented_spellings_both_accept() {
        let t = pg17();
        assert!(t.check("log_statement", "DDL").is_ok());
        assert!(
            t.check("huge_pages", "yes").is_ok(),
            "hidden on/off synonym"
        );
        assert!(
            t.check("default_transaction_isolation", "read committed")
                .is_ok()
        );
        assert!(t.check("ssl_max_protocol_version", "").is_ok());
        let err = t
            .check("log_statement", "everything")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "log_statement: \"everything\" is not valid: one of none, ddl, mod, all"
        );
        // PostgreSQL takes "debug" for client_min_messages; Patroni drops it.
        assert!(t.check("client_min_messages", "debug").is_err());
    }

    // The cases of these tests were put to `postgres -C` and Patroni's validator: "ok" is
    // what both keep as given.
    #[test]
    fn integers_are_read_as_postgresql_reads_them() {
        let t = pg17();
        for ok in [
            "100", " 100", "100 ", "0x64", "0144", "99.6", "1e2", "+100", ".5e3",
        ] {
            assert!(t.check("max_connections", ok).is_ok(), "{ok:?}");
        }
        for (bad, expected) in [
            ("0", "at least 1"),
            ("-5", "at least 1"),
            ("100 connections", "an integer, without a unit"),
            ("08", "an integer, without a unit"),
            ("100.", "an integer, without a unit"),
            ("0X64", "an integer, without a unit"),
            ("0x", "an integer, without a unit"),
            ("lots", "an integer, without a unit"),
            ("", "an integer, without a unit"),
            ("nan", "an integer, without a unit"),
            ("1e10", "an integer within 32 bits"),
        ] {
            let err = t.check("max_connections", bad).unwrap_err().to_string();
            assert!(err.ends_with(expected), "{bad:?}: {err}");
        }
    }

    #[test]
    fn units_convert_to_the_parameters_own_before_the_range_is_checked() {
        let t = pg17();
        // shared_buffers counts 8kB blocks, at least 16 (128kB).
        for ok in ["128kB", "1GB", "1 GB", "0.5GB", "16", "1TB"] {
            assert!(t.check("shared_buffers", ok).is_ok(), "{ok:?}");
        }
        let err = t.check("shared_buffers", "64kB").unwrap_err().to_string();
        assert_eq!(
            err,
            "shared_buffers: \"64kB\" is not valid: at least 16 (in units of 8kB)"
        );
        for bad in ["1gb", "1 G", "1GB!", "1 GB x", "5s"] {
            let err = t.check("shared_buffers", bad).unwrap_err().to_string();
            assert!(
                err.ends_with("an integer, with a unit among B, kB, MB, GB, TB (no unit: 8kB)"),
                "{bad:?}: {err}"
            );
        }
        assert!(t.check("statement_timeout", "5min").is_ok());
        assert!(t.check("statement_timeout", "1.5h").is_ok());
        assert!(t.check("statement_timeout", "5MB").is_err());
        assert!(
            t.check("checkpoint_timeout", "10s").is_err(),
            "minimum 30 s"
        );
        assert!(t.check("checkpoint_timeout", "30000ms").is_ok());
        assert!(
            t.check("checkpoint_timeout", "29999ms").is_ok(),
            "rounds to 30 s"
        );
        assert!(t.check("work_mem", "63.5").is_ok(), "rounds to 64");
        assert!(t.check("work_mem", "63.4").is_err());
        // Rounded to the next smaller unit (ms) first, as guc.c and Patroni do: 29.5 s → 30.
        assert!(t.check("checkpoint_timeout", "29.4999s").is_ok());
        assert!(t.check("autovacuum_naptime", "2147483.4999s").is_err());
        for (name, ok) in [
            ("shared_buffers", "1048576B"),
            ("shared_buffers", "131072B"),
            ("shared_buffers", "1.5MB"),
            ("statement_timeout", "1.0000004ms"),
            ("statement_timeout", "0.5us"),
            ("work_mem", "63.9999kB"),
            ("work_mem", "0.06249MB"),
        ] {
            assert!(t.check(name, ok).is_ok(), "{name} = {ok}");
        }
        for (name, bad) in [
            ("shared_buffers", "0.0001GB"),
            ("checkpoint_timeout", "29.4s"),
        ] {
            assert!(t.check(name, bad).is_err(), "{name} = {bad}");
        }
    }

    #[test]
    fn reals_take_fractions_exponents_and_time_units() {
        let t = pg17();
        for ok in ["0.9", "9e-1", "1", ".5", "0"] {
            assert!(
                t.check("checkpoint_completion_target", ok).is_ok(),
                "{ok:?}"
            );
        }
        for bad in [
            "1.5", "-0.1", "inf", "half", "0.5s", "1.000005", "1e-400", "0x1p-1",
        ] {
            assert!(
                t.check("checkpoint_completion_target", bad).is_err(),
                "{bad:?}"
            );
        }
        // vacuum_cost_delay is in ms, at most 100.
        assert!(t.check("vacuum_cost_delay", "2ms").is_ok());
        assert!(t.check("vacuum_cost_delay", "0.05s").is_ok());
        assert!(t.check("vacuum_cost_delay", "1s").is_err());
    }

    proptest::proptest! {
        // Whatever a user writes in spec.postgresql.parameters gets an answer, never a panic.
        #[test]
        fn any_name_and_value_get_an_answer(name in "[a-zA-Z_.]{0,40}", value in ".{0,40}") {
            for t in tables() {
                let _ = t.check(&name, &value);
            }
        }

        // Every whole number in an integer parameter's range, written plainly, is accepted.
        #[test]
        fn every_integer_in_range_is_accepted(pick in proptest::num::u64::ANY) {
            for t in tables() {
                let settable = |p: &&Parameter| p.kind == Kind::Integer && p.context != Context::Internal;
                for p in t.by_name.values().filter(settable) {
                    let (Some(min), Some(max)) = (p.min, p.max) else { continue };
                    let span = (max - min) as u64;
                    let value = min as i64 + (pick % span.saturating_add(1)) as i64;
                    proptest::prop_assert!(
                        t.check(p.name, &value.to_string()).is_ok(),
                        "{} = {value} refused on {}", p.name, t.major
                    );
                }
            }
        }
    }
}
