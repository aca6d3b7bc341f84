//! Bounds on manifest input, checked before anything is built from it: bytes per file and
//! per folder, documents per file, and a node budget that counts every node serde_yaml_ng
//! builds, aliases expanded, so an alias-amplified file is refused after at most
//! [`MAX_NODES`] nodes instead of growing without end. Kube objects (JSON from the API
//! server) get the same size, node and depth bounds through [`check_value`].

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// The largest manifest file read, in bytes (also the largest kube object).
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// The most bytes of manifests read from all paths together; files past it are refused.
pub const MAX_TOTAL_BYTES: u64 = 64 * 1024 * 1024;

/// The most YAML documents in one file.
pub const MAX_DOCUMENTS: usize = 10_000;

/// The most nodes (scalars, lists, mappings and keys) one file may build, each alias
/// counted as the whole node it stands for. A 1 MiB manifest written out by hand holds
/// far fewer; an alias-amplified one is stopped here.
pub const MAX_NODES: usize = 250_000;

/// The deepest nesting of lists and mappings in a kube object.
pub const MAX_DEPTH: usize = 64;

/// Why a file or object is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Too many bytes.
    #[error("refused: larger than {MAX_FILE_BYTES} bytes ({0} bytes)")]
    TooLarge(u64),
    /// Past the total of all paths.
    #[error(
        "refused: the manifests read before it already hold {0} bytes, the most read in total is {MAX_TOTAL_BYTES}"
    )]
    TotalExceeded(u64),
    /// Too many documents.
    #[error("refused: more than {MAX_DOCUMENTS} YAML documents in one file")]
    TooManyDocuments,
    /// Too many nodes, aliases expanded.
    #[error(
        "refused: more than {MAX_NODES} YAML nodes in the file with aliases expanded (each alias counts the whole node it repeats); split the file or use fewer aliases"
    )]
    TooManyNodes,
    /// A kube object with too many values and keys.
    #[error("refused: more than {MAX_NODES} values and keys in one object")]
    TooManyValues,
    /// Nested too deeply.
    #[error("refused: nested more than {MAX_DEPTH} levels deep")]
    TooDeep,
}

/// What is left of a file's node budget.
pub struct Budget {
    left: Cell<usize>,
    exhausted: Cell<bool>,
}

impl Budget {
    /// A fresh budget of [`MAX_NODES`].
    pub fn new() -> Self {
        Budget::of(MAX_NODES)
    }

    /// A budget of `nodes`.
    pub fn of(nodes: usize) -> Self {
        Budget {
            left: Cell::new(nodes),
            exhausted: Cell::new(false),
        }
    }

    /// Whether a parse stopped because the budget ran out.
    pub fn exhausted(&self) -> bool {
        self.exhausted.get()
    }

    fn take<E: de::Error>(&self) -> Result<(), E> {
        match self.left.get().checked_sub(1) {
            Some(left) => {
                self.left.set(left);
                Ok(())
            }
            None => {
                self.exhausted.set(true);
                Err(E::custom("node budget exhausted"))
            }
        }
    }
}

impl Default for Budget {
    fn default() -> Self {
        Budget::new()
    }
}

/// One YAML document as JSON, exactly as `serde_json::Value::deserialize` would build it,
/// charging each node (and each node an alias repeats) to `budget`: the parse stops with
/// an error as soon as the budget is used up, before the next node is built.
pub fn document<'de, D: de::Deserializer<'de>>(de: D, budget: &Budget) -> Result<Value, D::Error> {
    Counted(budget).deserialize(de)
}

/// A value of `budget`'s file.
struct Counted<'b>(&'b Budget);

impl<'de> DeserializeSeed<'de> for Counted<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, de: D) -> Result<Value, D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Counted<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any valid JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        self.0.take()?;
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        self.0.take()?;
        Ok(Value::Number(v.into()))
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Value, E> {
        self.0.take()?;
        use serde::Deserialize as _;
        Number::deserialize(de::value::I128Deserializer::<E>::new(v)).map(Value::Number)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        self.0.take()?;
        Ok(Value::Number(v.into()))
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Value, E> {
        self.0.take()?;
        use serde::Deserialize as _;
        Number::deserialize(de::value::U128Deserializer::<E>::new(v)).map(Value::Number)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        self.0.take()?;
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        self.0.take()?;
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        self.0.take()?;
        Ok(Value::String(v))
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        self.0.take()?;
        Ok(Value::Null)
    }

    fn visit_some<D: de::Deserializer<'de>>(self, de: D) -> Result<Value, D::Error> {
        de.deserialize_any(self)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        self.0.take()?;
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.0.take()?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(Counted(self.0))? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.0.take()?;
        let mut out = Map::new();
        while let Some(key) = map.next_key_seed(Key(self.0))? {
            let value = map.next_value_seed(Counted(self.0))?;
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

/// A mapping key: a string, as serde_json reads keys.
struct Key<'b>(&'b Budget);

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = String;

    fn deserialize<D: de::Deserializer<'de>>(self, de: D) -> Result<String, D::Error> {
        de.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key<'_> {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string key")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        self.0.take()?;
        Ok(v.to_string())
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
        self.0.take()?;
        Ok(v)
    }
}

/// Whether a kube object (JSON already parsed by the client) is within the bounds of a
/// manifest file: at most [`MAX_NODES`] nodes, [`MAX_DEPTH`] levels, and
/// [`MAX_FILE_BYTES`] bytes of keys and strings. Walks without recursion.
pub fn check_value(value: &Value) -> Result<(), Refused> {
    let mut nodes = 0usize;
    let mut bytes = 0u64;
    let mut stack: Vec<(&Value, usize)> = vec![(value, 1)];
    while let Some((v, depth)) = stack.pop() {
        nodes += 1;
        if nodes > MAX_NODES {
            return Err(Refused::TooManyValues);
        }
        if depth > MAX_DEPTH {
            return Err(Refused::TooDeep);
        }
        match v {
            Value::String(s) => bytes += s.len() as u64,
            Value::Array(items) => stack.extend(items.iter().map(|i| (i, depth + 1))),
            Value::Object(map) => {
                for (k, item) in map {
                    nodes += 1;
                    bytes += k.len() as u64;
                    stack.push((item, depth + 1));
                }
            }
            _ => bytes += 4,
        }
        if bytes > MAX_FILE_BYTES {
            return Err(Refused::TooLarge(bytes));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, budget: &Budget) -> Result<Vec<Value>, String> {
        serde_yaml_ng::Deserializer::from_str(text)
            .map(|de| document(de, budget).map_err(|e| e.to_string()))
            .collect()
    }

    #[test]
    fn builds_what_serde_json_builds() {
        let text = "a: [1, -2, 3.5, .nan, true, null, ~, 'x', 18446744073709551615]\nb: {c: d}\n1: e\nf: &x [1]\ng: *x\n---\n- z\n";
        let want: Vec<Value> = serde_yaml_ng::Deserializer::from_str(text)
            .map(|de| {
                use serde::Deserialize as _;
                Value::deserialize(de).unwrap()
            })
            .collect();
        assert_eq!(parse(text, &Budget::new()).unwrap(), want);
        // Tags are refused the same way.
        let tagged = "a: !foo 1\n";
        let a = serde_yaml_ng::from_str::<Value>(tagged).map_err(|e| e.to_string());
        let b = parse(tagged, &Budget::new()).map(|mut v| v.remove(0));
        assert_eq!(a.is_err(), b.is_err());
    }

    #[test]
    fn aliases_count_what_they_repeat() {
        // 1 map + 1 key + the list (1 + 10) for a; b's key and list (1 + 10 × 11).
        let text = format!(
            "a: &a [{}]\nb: [{}]\n",
            ["x"; 10].join(","),
            ["*a"; 10].join(",")
        );
        let budget = Budget::of(1000);
        parse(&text, &budget).unwrap();
        assert_eq!(1000 - budget.left.get(), 1 + 1 + 11 + 1 + 1 + 110);
        let small = Budget::of(100);
        assert!(parse(&text, &small).is_err());
        assert!(small.exhausted());
    }

    #[test]
    fn kube_objects_are_bounded() {
        assert_eq!(check_value(&serde_json::json!({"a": [1, "b"]})), Ok(()));
        let mut deep = Value::Null;
        for _ in 0..100 {
            deep = Value::Array(vec![deep]);
        }
        assert_eq!(check_value(&deep), Err(Refused::TooDeep));
        let wide = Value::Array(vec![Value::Bool(true); MAX_NODES + 1]);
        assert_eq!(check_value(&wide), Err(Refused::TooManyValues));
        let long = serde_json::json!({"a": "x".repeat(MAX_FILE_BYTES as usize + 1)});
        assert!(matches!(check_value(&long), Err(Refused::TooLarge(_))));
    }
}
