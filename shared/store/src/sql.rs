//! The SQL surface a unit of work sees: [`Tx`], an open transaction on either backend, with
//! parameters written `$1`, `$2`, … in both dialects, and rows of integers and text (the only
//! column types the services use).

use crate::{Backend, Error, Result};

/// A parameter of a statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Param<'a> {
    Int(Option<i64>),
    Text(Option<&'a str>),
}

impl From<i64> for Param<'_> {
    fn from(value: i64) -> Self {
        Param::Int(Some(value))
    }
}

impl From<Option<i64>> for Param<'_> {
    fn from(value: Option<i64>) -> Self {
        Param::Int(value)
    }
}

impl<'a> From<&'a str> for Param<'a> {
    fn from(value: &'a str) -> Self {
        Param::Text(Some(value))
    }
}

impl<'a> From<&'a String> for Param<'a> {
    fn from(value: &'a String) -> Self {
        Param::Text(Some(value))
    }
}

impl<'a> From<Option<&'a str>> for Param<'a> {
    fn from(value: Option<&'a str>) -> Self {
        Param::Text(value)
    }
}

/// A value read from a row.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Value {
    #[default]
    Null,
    Int(i64),
    Text(String),
}

/// One row of a result, its columns in the order of the `SELECT`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Row(pub Vec<Value>);

impl Row {
    /// Takes column `index` out of the row as a `T` (the column is left `NULL`), so text is moved
    /// rather than copied.
    pub fn take<T: FromValue>(&mut self, index: usize) -> Result<T> {
        let value = self
            .0
            .get_mut(index)
            .map(std::mem::take)
            .ok_or_else(|| Error::Failed(format!("no column {index} in the row")))?;
        T::from_value(value).map_err(|found| {
            Error::Failed(format!(
                "column {index}: expected {}, found {found:?}",
                T::EXPECTED
            ))
        })
    }
}

/// A Rust type a column converts into.
pub trait FromValue: Sized {
    /// What the type expects, for error messages.
    const EXPECTED: &'static str;
    /// The value as `Self`, or the value back when it does not fit.
    fn from_value(value: Value) -> Result<Self, Value>;
}

impl FromValue for i64 {
    const EXPECTED: &'static str = "an integer";
    fn from_value(value: Value) -> Result<Self, Value> {
        match value {
            Value::Int(int) => Ok(int),
            other => Err(other),
        }
    }
}

impl FromValue for String {
    const EXPECTED: &'static str = "text";
    fn from_value(value: Value) -> Result<Self, Value> {
        match value {
            Value::Text(text) => Ok(text),
            other => Err(other),
        }
    }
}

impl<T: FromValue> FromValue for Option<T> {
    const EXPECTED: &'static str = T::EXPECTED;
    fn from_value(value: Value) -> Result<Self, Value> {
        match value {
            Value::Null => Ok(None),
            other => T::from_value(other).map(Some),
        }
    }
}

/// An open transaction. A unit of work runs its statements on it synchronously, on the thread
/// the store gave it; the store commits when the work returns `Ok` and rolls back otherwise.
pub trait Tx {
    /// Which database this is, for the few statements whose SQL differs.
    fn backend(&self) -> Backend;

    /// Runs a statement; returns how many rows it changed.
    fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64>;

    /// Runs a query; returns every row.
    fn query(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>>;

    /// Runs a query expected to return at most one row.
    fn query_opt(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Option<Row>> {
        Ok(self.query(sql, params)?.into_iter().next())
    }
}

/// `$1, $2, … $n` starting at `$first`: placeholders for a list of `n` values.
pub fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `($1, $2), ($3, $4)`: the `VALUES` list of a multi-row insert of `rows` rows of `columns`
/// values each.
pub fn value_rows(rows: usize, columns: usize) -> String {
    (0..rows)
        .map(|row| format!("({})", placeholders(1 + row * columns, columns)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The most rows [`runs_of_powers_of_two`] puts in one run: 256 rows of even 64 values stay
/// far below PostgreSQL's 65,535 bind parameters and SQLite's 32,766.
pub const LONGEST_RUN: usize = 256;

/// Splits `items` in order into runs whose lengths are powers of two, largest first, none longer
/// than [`LONGEST_RUN`] (13 items: 8, 4, 1). A multi-row statement per run then has one of a few
/// texts whatever the batch size, so it stays in each connection's statement cache, and never
/// more parameters than the database takes.
pub fn runs_of_powers_of_two<T>(mut items: &[T]) -> impl Iterator<Item = &[T]> {
    std::iter::from_fn(move || {
        if items.is_empty() {
            return None;
        }
        let len = (1 << items.len().ilog2()).min(LONGEST_RUN);
        let (run, rest) = items.split_at(len);
        items = rest;
        Some(run)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_gives_its_columns_as_typed_values_and_names_a_mismatch() {
        let mut row = Row(vec![Value::Int(7), Value::Text("a".into()), Value::Null]);
        assert_eq!(row.take::<i64>(0), Ok(7));
        assert_eq!(row.take::<String>(1), Ok("a".to_owned()));
        assert_eq!(row.take::<Option<String>>(2), Ok(None));
        let mut row = Row(vec![Value::Text("x".into())]);
        let error = row.take::<i64>(0).unwrap_err();
        assert!(error.to_string().contains("expected an integer"), "{error}");
        assert!(row.take::<i64>(3).is_err());
    }

    #[test]
    fn value_rows_number_each_row_after_the_last() {
        assert_eq!(value_rows(2, 3), "($1, $2, $3), ($4, $5, $6)");
        assert_eq!(value_rows(1, 1), "($1)");
    }

    #[test]
    fn runs_are_powers_of_two_in_order_and_cover_every_item() {
        let items: Vec<usize> = (0..13).collect();
        let runs: Vec<&[usize]> = runs_of_powers_of_two(&items).collect();
        assert_eq!(runs.iter().map(|r| r.len()).collect::<Vec<_>>(), [8, 4, 1]);
        assert_eq!(runs.concat(), items);
        assert_eq!(runs_of_powers_of_two::<u8>(&[]).count(), 0);
        assert_eq!(runs_of_powers_of_two(&[1; 32]).count(), 1);
        // A long list is cut into runs of at most LONGEST_RUN.
        let long = vec![0u8; 3 * LONGEST_RUN + 3];
        let lengths: Vec<usize> = runs_of_powers_of_two(&long).map(<[u8]>::len).collect();
        assert_eq!(lengths, [LONGEST_RUN, LONGEST_RUN, LONGEST_RUN, 2, 1]);
    }

    #[test]
    fn placeholders_number_a_list() {
        assert_eq!(placeholders(2, 3), "$2, $3, $4");
        assert_eq!(placeholders(1, 0), "");
    }
}
