//! Value expressions: how a stage computes its key (or a captured value) from a hit.
//!
//! ```text
//! key       := component [ "," component ]          at most two components
//! component := "cpu" | "tid" | "tgid" | "global"
//!            | [ "(struct" NAME "*)" ] base [ "->" member { "." member } ]
//! base      := "arg" N | "ret" | FIELD               FIELD: a tracepoint format field
//! ```
//! Examples: `next_pid` (tracepoint field), `cpu,vec`, `arg0->pid` (tp_btf sched_wakeup),
//! `(struct clocksource *)arg0->read` (change_clocksource takes a `void *`).

use std::fmt;

/// One parsed component.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ValueExpr {
    Cpu,
    Tid,
    Tgid,
    Global,
    /// A tracepoint record field, by name.
    Field(String),
    /// A probe argument, optionally dereferenced along a member path.
    Arg {
        index: u8,
        deref: Option<Deref>,
    },
    /// The return value, optionally dereferenced.
    Ret {
        deref: Option<Deref>,
    },
}

/// `->a.b.c`, read through a pointer whose type is the argument's BTF type, or `cast`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deref {
    /// `struct NAME` the pointer is cast to, when the argument is untyped (`void *`).
    pub cast: Option<String>,
    /// Member path; nested members with `.`.
    pub path: Vec<String>,
}

/// A key: one or two components.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyExpr(pub Vec<ValueExpr>);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ValueParseError {
    #[error("empty key expression")]
    Empty,
    #[error("a key has at most two components, `{0}` has more")]
    TooManyComponents(String),
    #[error("`{expr}`: {why}")]
    Syntax { expr: String, why: &'static str },
}

fn ident(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(ch) if ch.is_ascii_alphabetic() || ch == '_')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
}

impl ValueExpr {
    pub fn parse(s: &str) -> Result<Self, ValueParseError> {
        let expr = s.trim();
        let err = |why| ValueParseError::Syntax { expr: expr.to_string(), why };
        match expr {
            "" => return Err(ValueParseError::Empty),
            "cpu" => return Ok(ValueExpr::Cpu),
            "tid" | "pid_thread" => return Ok(ValueExpr::Tid),
            "tgid" => return Ok(ValueExpr::Tgid),
            "global" => return Ok(ValueExpr::Global),
            _ => {}
        }
        let (cast, rest) = if let Some(r) = expr.strip_prefix('(') {
            let (inside, after) = r.split_once(')').ok_or_else(|| err("unclosed cast"))?;
            let name = inside
                .trim()
                .strip_prefix("struct")
                .and_then(|n| n.trim().strip_suffix('*'))
                .map(str::trim)
                .filter(|n| ident(n))
                .ok_or_else(|| err("a cast is written (struct NAME *)"))?;
            (Some(name.to_string()), after.trim())
        } else {
            (None, expr)
        };
        let (base, path) = match rest.split_once("->") {
            Some((b, p)) => {
                let path: Vec<String> = p.split('.').map(|m| m.trim().to_string()).collect();
                if path.iter().any(|m| !ident(m)) {
                    return Err(err("members after -> are identifiers separated by ."));
                }
                (b.trim(), Some(path))
            }
            None => (rest, None),
        };
        if cast.is_some() && path.is_none() {
            return Err(err("a cast needs a member to read: (struct NAME *)argN->member"));
        }
        let deref = path.map(|path| Deref { cast, path });
        if base == "ret" {
            return Ok(ValueExpr::Ret { deref });
        }
        if let Some(n) = base.strip_prefix("arg").filter(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit())) {
            let index: u8 = n.parse().map_err(|_| err("argument index out of range"))?;
            if index > 11 {
                return Err(err("argument index must be 0 to 11"));
            }
            return Ok(ValueExpr::Arg { index, deref });
        }
        if !ident(base) {
            return Err(err("expected cpu, tid, tgid, global, argN, ret or a tracepoint field name"));
        }
        if deref.is_some() {
            return Err(err("tracepoint fields cannot be dereferenced; use tp_btf or raw_tracepoint and argN->member"));
        }
        Ok(ValueExpr::Field(base.to_string()))
    }
}

impl KeyExpr {
    pub fn parse(s: &str) -> Result<Self, ValueParseError> {
        // A comma inside a cast never occurs, so splitting on ',' is safe.
        let parts: Vec<&str> = s.split(',').collect();
        if parts.len() > 2 {
            return Err(ValueParseError::TooManyComponents(s.to_string()));
        }
        parts.into_iter().map(ValueExpr::parse).collect::<Result<Vec<_>, _>>().map(KeyExpr)
    }
}

/// One condition of a filter: `expr [& mask] == value` (with `negate`: `!=`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Condition {
    pub expr: ValueExpr,
    /// Bits of the value compared (`u64::MAX`: all).
    pub mask: u64,
    pub value: u64,
    pub negate: bool,
    /// The value is this kernel symbol's address (resolved from kallsyms by the planner),
    /// e.g. a timer's handler: `function == tick_nohz_handler`.
    pub symbol: Option<String>,
}

/// A stage filter: a hit counts only when every condition holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filter {
    pub conditions: Vec<Condition>,
}

/// Conditions a filter may join with `&&` (the slot's `MAX_CONDITIONS`).
pub const MAX_FILTER_CONDITIONS: usize = clockpath_common::slot::MAX_CONDITIONS;

fn number(s: &str) -> Option<u64> {
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

impl Filter {
    /// Parse `COND [&& COND]`, each `EXPR [& MASK] == VALUE` or `EXPR [& MASK] != VALUE`;
    /// MASK is an integer, VALUE an integer (decimal or 0x hex), `self` (this process's pid) or
    /// a kernel function name.
    pub fn parse(s: &str) -> Result<Filter, String> {
        let parts: Vec<&str> = s.split("&&").collect();
        if parts.len() > MAX_FILTER_CONDITIONS {
            return Err(format!(
                "filter `{s}`: at most {MAX_FILTER_CONDITIONS} conditions joined by &&, not {}",
                parts.len()
            ));
        }
        let conditions = parts.into_iter().map(|c| Condition::parse(s, c)).collect::<Result<_, _>>()?;
        Ok(Filter { conditions })
    }
}

impl Condition {
    fn parse(whole: &str, s: &str) -> Result<Condition, String> {
        let (lhs, rhs, negate) = match (s.split_once("=="), s.split_once("!=")) {
            (Some((l, r)), None) => (l, r, false),
            (None, Some((l, r))) => (l, r, true),
            _ => {
                return Err(format!(
                    "filter `{whole}`: expected EXPR == VALUE or EXPR != VALUE (joined by &&), e.g. tid == 1234"
                ));
            }
        };
        let (lhs, mask) = match lhs.split_once('&') {
            Some((e, m)) => {
                let m = m.trim();
                (e, number(m).ok_or_else(|| format!("filter `{whole}`: mask `{m}` is not a number"))?)
            }
            None => (lhs, u64::MAX),
        };
        let expr = ValueExpr::parse(lhs).map_err(|e| format!("filter `{whole}`: {e}"))?;
        let rhs = rhs.trim();
        let symbol_like = rhs.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && rhs.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
        let (value, symbol) = if rhs == "self" {
            (std::process::id() as u64, None)
        } else if rhs.starts_with(|c: char| c.is_ascii_digit()) {
            (number(rhs).ok_or_else(|| format!("filter `{whole}`: `{rhs}` is not a number"))?, None)
        } else if symbol_like {
            if mask != u64::MAX {
                return Err(format!("filter `{whole}`: a function address is compared whole, without a mask"));
            }
            (0, Some(rhs.to_string()))
        } else {
            return Err(format!("filter `{whole}`: `{rhs}` is not a number, `self` or a kernel function name"));
        };
        if value & !mask != 0 {
            return Err(format!(
                "filter `{whole}`: {value:#x} has bits outside the mask {mask:#x}; it can never match"
            ));
        }
        Ok(Condition { expr, mask, value, negate, symbol })
    }
}

impl fmt::Display for ValueExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let deref = |f: &mut fmt::Formatter<'_>, base: &str, d: &Option<Deref>| match d {
            None => f.write_str(base),
            Some(Deref { cast: Some(c), path }) => write!(f, "(struct {c} *){base}->{}", path.join(".")),
            Some(Deref { cast: None, path }) => write!(f, "{base}->{}", path.join(".")),
        };
        match self {
            ValueExpr::Cpu => f.write_str("cpu"),
            ValueExpr::Tid => f.write_str("tid"),
            ValueExpr::Tgid => f.write_str("tgid"),
            ValueExpr::Global => f.write_str("global"),
            ValueExpr::Field(n) => f.write_str(n),
            ValueExpr::Arg { index, deref: d } => deref(f, &format!("arg{index}"), d),
            ValueExpr::Ret { deref: d } => deref(f, "ret", d),
        }
    }
}

impl fmt::Display for KeyExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_back() {
        for s in [
            "cpu",
            "global",
            "next_pid",
            "cpu,vec",
            "arg0->pid",
            "arg2->se.vruntime",
            "(struct clocksource *)arg0->read",
            "ret",
            "ret->pid",
        ] {
            let k = KeyExpr::parse(s).unwrap();
            assert_eq!(k.to_string(), s);
        }
        assert_eq!(
            ValueExpr::parse("(struct clocksource*)arg0->read").unwrap(),
            ValueExpr::Arg {
                index: 0,
                deref: Some(Deref { cast: Some("clocksource".into()), path: vec!["read".into()] })
            }
        );
    }

    #[test]
    fn filters_compare_an_expression_with_a_number_or_self() {
        let one = |s: &str| Filter::parse(s).unwrap().conditions.remove(0);
        assert_eq!(
            one("tid == 12"),
            Condition { expr: ValueExpr::Tid, mask: u64::MAX, value: 12, negate: false, symbol: None }
        );
        assert_eq!(one("arg0 == 0x10").value, 16);
        assert_eq!(one("tgid == self").value, std::process::id() as u64);
        let f = one("arg0->function != tick_nohz_handler");
        assert!(f.negate);
        assert_eq!(f.symbol.as_deref(), Some("tick_nohz_handler"));
        for bad in
            ["tid = 3", "tid == 3-x", "== 3", "tid == 1 != 2", "tid == 0xzz", "tid & zz == 0", "tid & 0xf == 0x10"]
        {
            assert!(Filter::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn filters_join_two_masked_conditions() {
        let f = Filter::parse("prev_state & 0xff == 0 && prev_pid != 0").unwrap();
        assert_eq!(f.conditions.len(), 2);
        assert_eq!((f.conditions[0].mask, f.conditions[0].value, f.conditions[0].negate), (0xff, 0, false));
        assert_eq!(f.conditions[0].expr, ValueExpr::Field("prev_state".into()));
        assert_eq!((f.conditions[1].mask, f.conditions[1].negate), (u64::MAX, true));
        let three = Filter::parse("tid == 1 && tid == 2 && tid == 3").unwrap_err();
        assert!(three.contains("at most 2 conditions"), "{three}");
        assert!(Filter::parse("arg0->function & 0xff == tick_nohz_handler").is_err());
    }

    #[test]
    fn rejects_with_reasons() {
        for s in
            ["", "cpu,vec,pid", "arg12", "(clocksource *)arg0->read", "(struct cs *)arg0", "pid->x", "a-b", "arg0->"]
        {
            assert!(KeyExpr::parse(s).is_err(), "{s} should not parse");
        }
    }
}
