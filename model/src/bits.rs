//! Bit-field helpers shared by the control-word types (one implementation for all).

use crate::error::ModelError;

/// A named bit field `[msb:lsb]` of a 64-bit register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    /// The Arm ARM's name of the field.
    pub name: &'static str,
    /// Most significant bit.
    pub msb: u32,
    /// Least significant bit.
    pub lsb: u32,
}

impl Field {
    /// Declare `[msb:lsb]`.
    pub const fn new(name: &'static str, msb: u32, lsb: u32) -> Self {
        Field { name, msb, lsb }
    }

    /// The field's mask, in place.
    pub const fn mask(self) -> u64 {
        let width = self.msb - self.lsb + 1;
        let ones = if width == 64 {
            u64::MAX
        } else {
            (1u64 << width) - 1
        };
        ones << self.lsb
    }

    /// Extract the field.
    pub const fn get(self, value: u64) -> u64 {
        (value & self.mask()) >> self.lsb
    }

    /// Return `value` with the field replaced by `field`; `field` must fit.
    pub fn set(self, value: u64, field: u64, rule: &'static str) -> Result<u64, ModelError> {
        if field << self.lsb >> self.lsb != field || (field << self.lsb) & !self.mask() != 0 {
            return Err(ModelError::BadField {
                what: self.name,
                value: field,
                rule,
            });
        }
        Ok((value & !self.mask()) | (field << self.lsb))
    }

    /// `[msb:lsb]` or `[bit]` as the Arm ARM writes it.
    pub fn bits(self) -> String {
        if self.msb == self.lsb {
            format!("{}", self.lsb)
        } else {
            format!("{}:{}", self.msb, self.lsb)
        }
    }
}

/// Whether the set bits of `bas` form one contiguous run (Arm ARM WatchpointByteMatch:
/// `LSB = BAS AND NOT(BAS - 1); MSB = BAS + LSB; contiguous if MSB AND (MSB - 1) == 0`).
pub const fn is_contiguous(bas: u64) -> bool {
    let lsb = bas & !bas.wrapping_sub(1);
    let msb = bas.wrapping_add(lsb);
    msb & msb.wrapping_sub(1) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_get_set() {
        let f = Field::new("BAS", 8, 5);
        assert_eq!(f.mask(), 0x1e0);
        assert_eq!(f.get(0x1e7), 0xf);
        assert_eq!(f.set(0x7, 0xf, "4 bits").unwrap(), 0x1e7);
        assert!(f.set(0, 0x10, "4 bits").is_err());
        assert_eq!(Field::new("ALL", 63, 0).mask(), u64::MAX);
    }

    #[test]
    fn contiguity() {
        for bas in [0x1u64, 0x3, 0x6, 0xff, 0x80, 0x0, 0x3c] {
            assert!(is_contiguous(bas), "{bas:#x}");
        }
        for bas in [0x5u64, 0x81, 0xf7, 0x9] {
            assert!(!is_contiguous(bas), "{bas:#x}");
        }
    }
}
