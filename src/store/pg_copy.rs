//! PostgreSQL's binary `COPY ... FROM STDIN (FORMAT binary)` stream, written row by row.
//!
//! An agent batch stores 1,000 sample rows; `COPY` takes them as one stream and writes the heap a
//! page at a time, where an `INSERT` takes them as 25 array parameters to decode and inserts them
//! a row at a time (see "Sample ingestion" in BENCHMARKS.md). In the binary format every value is
//! already in the server's own representation, so nothing but the JSON columns is parsed, and
//! `json` only checks its text.
//!
//! Layout (PostgreSQL documentation, `COPY`, "Binary Format"): an 11-byte signature, a flags word
//! and a header-extension length; per row a 16-bit field count, then per field its 32-bit length
//! (-1 for NULL) and its bytes; a 16-bit -1 to end. Integers are big-endian; `timestamptz` is
//! microseconds since 2000-01-01 UTC; `float8` is its IEEE bits.

use chrono::{DateTime, Utc};
use serde::Serialize;

/// What starts every binary COPY stream: the signature, no flags, no header extension.
const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01 00:00:00 UTC).
const POSTGRES_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// The length word of a NULL field.
const NULL: i32 = -1;

/// A binary COPY stream being written. Each row is [`row`](Self::row) followed by exactly the
/// fields the `COPY` statement names, in its order.
pub(crate) struct BinaryCopy {
    buf: Vec<u8>,
}

impl BinaryCopy {
    /// An empty stream, with room for about `capacity` bytes.
    pub(crate) fn with_capacity(capacity: usize) -> BinaryCopy {
        let mut buf = Vec::with_capacity(capacity + HEADER.len() + 2);
        buf.extend_from_slice(HEADER);
        BinaryCopy { buf }
    }

    /// Starts a row of `fields` fields.
    pub(crate) fn row(&mut self, fields: i16) -> &mut Self {
        self.buf.extend_from_slice(&fields.to_be_bytes());
        self
    }

    fn null(&mut self) {
        self.buf.extend_from_slice(&NULL.to_be_bytes());
    }

    fn field(&mut self, bytes: &[u8]) {
        let len = i32::try_from(bytes.len()).expect("a COPY field under 2 GiB");
        self.buf.extend_from_slice(&len.to_be_bytes());
        self.buf.extend_from_slice(bytes);
    }

    /// An `int8` field.
    pub(crate) fn int8(&mut self, value: Option<i64>) -> &mut Self {
        match value {
            Some(v) => self.field(&v.to_be_bytes()),
            None => self.null(),
        }
        self
    }

    /// A `float8` field.
    pub(crate) fn float8(&mut self, value: Option<f64>) -> &mut Self {
        match value {
            Some(v) => self.field(&v.to_be_bytes()),
            None => self.null(),
        }
        self
    }

    /// A `text` field.
    pub(crate) fn text(&mut self, value: Option<&str>) -> &mut Self {
        match value {
            Some(v) => self.field(v.as_bytes()),
            None => self.null(),
        }
        self
    }

    /// A `timestamptz` field, to the microsecond (as PostgreSQL stores it; finer is dropped).
    pub(crate) fn timestamptz(&mut self, value: DateTime<Utc>) -> &mut Self {
        self.field(&(value.timestamp_micros() - POSTGRES_EPOCH_MICROS).to_be_bytes());
        self
    }

    /// A `json` field: the value serialized straight into the stream (a `json` value's binary
    /// form is its text).
    pub(crate) fn json<T: Serialize + ?Sized>(
        &mut self,
        value: Option<&T>,
    ) -> Result<&mut Self, serde_json::Error> {
        let Some(value) = value else {
            self.null();
            return Ok(self);
        };
        let at = self.buf.len();
        self.buf.extend_from_slice(&0i32.to_be_bytes());
        serde_json::to_writer(&mut self.buf, value)?;
        let len = i32::try_from(self.buf.len() - at - 4).expect("a COPY field under 2 GiB");
        self.buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
        Ok(self)
    }

    /// The whole stream, ended.
    pub(crate) fn finish(mut self) -> Vec<u8> {
        self.buf.extend_from_slice(&(-1i16).to_be_bytes());
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn pg_copy_writes_the_documented_binary_layout() {
        let mut copy = BinaryCopy::with_capacity(0);
        copy.row(5)
            .int8(Some(-2))
            .float8(None)
            .text(Some("ab"))
            .timestamptz(Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 1).unwrap());
        copy.json(Some(&[1, 2])).unwrap();
        let bytes = copy.finish();
        let mut want = b"PGCOPY\n\xff\r\n\0".to_vec();
        want.extend([0, 0, 0, 0, 0, 0, 0, 0]); // flags, extension length
        want.extend([0, 5]); // five fields
        want.extend([0, 0, 0, 8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe]);
        want.extend([0xff, 0xff, 0xff, 0xff]); // NULL
        want.extend([0, 0, 0, 2, b'a', b'b']);
        want.extend([0, 0, 0, 8, 0, 0, 0, 0, 0, 0x0f, 0x42, 0x40]); // 1,000,000 µs
        want.extend([0, 0, 0, 5]);
        want.extend(b"[1,2]");
        want.extend([0xff, 0xff]); // end
        assert_eq!(bytes, want);
    }
}
