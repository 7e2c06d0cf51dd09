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

/// A stage filter: a hit counts only when `expr` evaluates to `value` (with `negate`: to
/// anything else).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filter {
    pub expr: ValueExpr,
    pub value: u64,
    pub negate: bool,
    /// The value is this kernel symbol's address (resolved from kallsyms by the planner),
    /// e.g. a timer's handler: `function == tick_nohz_handler`.
    pub symbol: Option<String>,
}

impl Filter {
    /// Parse `EXPR == VALUE` or `EXPR != VALUE`; VALUE is an integer (decimal or 0x hex),
    /// `self` (this process's pid) or a kernel function name.
    pub fn parse(s: &str) -> Result<Filter, String> {
        let (lhs, rhs, negate) = match (s.split_once("=="), s.split_once("!=")) {
            (Some((l, r)), None) => (l, r, false),
            (None, Some((l, r))) => (l, r, true),
            _ => return Err(format!("filter `{s}`: expected EXPR == VALUE or EXPR != VALUE, e.g. tid == 1234")),
        };
        let expr = ValueExpr::parse(lhs).map_err(|e| format!("filter `{s}`: {e}"))?;
        let rhs = rhs.trim();
        let symbol_like = rhs.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && rhs.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
        let (value, symbol) = if rhs == "self" {
            (std::process::id() as u64, None)
        } else if let Some(h) = rhs.strip_prefix("0x") {
            (u64::from_str_radix(h, 16).map_err(|_| format!("filter `{s}`: `{rhs}` is not a number"))?, None)
        } else if let Ok(n) = rhs.parse() {
            (n, None)
        } else if symbol_like {
            (0, Some(rhs.to_string()))
        } else {
            return Err(format!("filter `{s}`: `{rhs}` is not a number, `self` or a kernel function name"));
        };
        Ok(Filter { expr, value, negate, symbol })
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
        assert_eq!(
            Filter::parse("tid == 12").unwrap(),
            Filter { expr: ValueExpr::Tid, value: 12, negate: false, symbol: None }
        );
        assert_eq!(Filter::parse("arg0 == 0x10").unwrap().value, 16);
        assert_eq!(Filter::parse("tgid == self").unwrap().value, std::process::id() as u64);
        let f = Filter::parse("arg0->function != tick_nohz_handler").unwrap();
        assert!(f.negate);
        assert_eq!(f.symbol.as_deref(), Some("tick_nohz_handler"));
        for bad in ["tid = 3", "tid == 3-x", "== 3", "tid == 1 != 2", "tid == 0xzz"] {
            assert!(Filter::parse(bad).is_err(), "{bad}");
        }
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
