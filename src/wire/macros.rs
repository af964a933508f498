//! The three tables the protocol is declared from: numbered enums, message bodies (fields in
//! wire order, each with its limit) and the opcode table. Each expands to the types plus
//! their [`Field`](super::field::Field) impls, so a layout is written once and its reader,
//! writer and generator follow from it.

/// A one- or two-byte enum with stable wire numbers; any other number is `InvalidValue`.
macro_rules! wire_enum {
    (
        $(#[$meta:meta])*
        $name:ident: $repr:ty {
            $( $(#[$vmeta:meta])* $variant:ident = $value:literal, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr($repr)]
        pub enum $name {
            $( $(#[$vmeta])* $variant = $value, )*
        }

        impl $name {
            /// Every value, in the order the spec lists them.
            pub const ALL: &'static [Self] = &[$(Self::$variant),*];

            /// The value with this wire number, if the protocol defines one.
            pub fn from_wire(value: $repr) -> Option<Self> {
                match value {
                    $( $value => Some(Self::$variant), )*
                    _ => None,
                }
            }

            /// This value's wire number.
            pub fn to_wire(self) -> $repr {
                self as $repr
            }
        }

        impl<'a> $crate::wire::field::Field<'a> for $name {
            type Limit = ();
            const MIN_BYTES: usize = size_of::<$repr>();
            fn read(
                r: &mut $crate::wire::field::Reader<'a>,
                _: (),
            ) -> Result<Self, $crate::wire::Error> {
                Self::from_wire(<$repr>::read(r, ())?).ok_or($crate::wire::Error::InvalidValue)
            }
            fn write(&self, out: &mut Vec<u8>, _: ()) -> Result<(), $crate::wire::Error> {
                self.to_wire().write(out, ())
            }
            fn arbitrary(e: &mut $crate::wire::field::Entropy<'a>, _: ()) -> Self {
                let all = Self::ALL;
                all.get(e.below(all.len())).copied().unwrap_or(all[0])
            }
        }
    };
}

/// A message body or list item: named fields in wire order, each `name: Type = limit`, and
/// optionally `check path` naming a cross-field rule run after reading and before writing.
macro_rules! body {
    (
        $(#[$meta:meta])*
        $name:ident $(<$lt:lifetime>)? {
            $( $(#[$fmeta:meta])* $field:ident : $ty:ty = $limit:expr, )*
        }
        $(check $check:path)?
    ) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub struct $name $(<$lt>)? {
            $( $(#[$fmeta])* pub $field: $ty, )*
        }

        impl<'a> $crate::wire::field::Field<'a> for $name $(<$lt>)? {
            type Limit = ();
            const MIN_BYTES: usize =
                0 $( + <$ty as $crate::wire::field::Field<'a>>::MIN_BYTES )*;
            #[allow(unused_variables)]
            #[inline]
            fn read(
                r: &mut $crate::wire::field::Reader<'a>,
                _: (),
            ) -> Result<Self, $crate::wire::Error> {
                let value = Self {
                    $( $field: {
                        let field = <$ty as $crate::wire::field::Field<'a>>::read(r, $limit)?;
                        #[cfg(test)]
                        r.mark(concat!(stringify!($name), ".", stringify!($field)), stringify!($ty));
                        field
                    }, )*
                };
                $( $check(&value)?; )?
                Ok(value)
            }
            #[allow(unused_variables)]
            #[inline]
            fn write(&self, out: &mut Vec<u8>, _: ()) -> Result<(), $crate::wire::Error> {
                $( $check(self)?; )?
                $( <$ty as $crate::wire::field::Field<'a>>::write(&self.$field, out, $limit)?; )*
                Ok(())
            }
            #[allow(unused_variables)]
            fn arbitrary(e: &mut $crate::wire::field::Entropy<'a>, _: ()) -> Self {
                Self {
                    $( $field: <$ty as $crate::wire::field::Field<'a>>::arbitrary(e, $limit), )*
                }
            }
        }
    };
}

/// The opcode table: number, wire name, `Message` variant and body type of every message.
macro_rules! messages {
    (
        $( $(#[$meta:meta])* $code:literal $wire_name:literal $variant:ident($ty:ty), )*
    ) => {
        wire_enum! {
            /// The opcode byte of a frame header: which message the body holds.
            Opcode: u8 {
                $( $(#[$meta])* $variant = $code, )*
            }
        }

        impl Opcode {
            /// The message's name in the spec, e.g. `GET_REPLY`.
            pub fn name(self) -> &'static str {
                match self {
                    $( Opcode::$variant => $wire_name, )*
                }
            }
        }

        /// Every message of the protocol, borrowing its byte strings from the frame.
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub enum Message<'a> {
            $( $(#[$meta])* $variant($ty), )*
        }

        impl<'a> Message<'a> {
            /// The opcode that carries this message.
            pub fn opcode(&self) -> Opcode {
                match self {
                    $( Message::$variant(_) => Opcode::$variant, )*
                }
            }

            #[inline]
            /// Reads a whole body: its fields, then nothing more (else `TrailingBytes`).
            pub(crate) fn read_body(
                opcode: Opcode,
                r: &mut $crate::wire::field::Reader<'a>,
            ) -> Result<Self, $crate::wire::Error> {
                use $crate::wire::field::Field;
                // The end is checked in each arm, so the message is built once, in place,
                // instead of being moved out of a temporary after the check.
                match opcode {
                    $( Opcode::$variant => {
                        let body = <$ty>::read(r, ())?;
                        r.finish()?;
                        Ok(Message::$variant(body))
                    } )*
                }
            }

            #[inline]
            pub(crate) fn write_body(&self, out: &mut Vec<u8>) -> Result<(), $crate::wire::Error> {
                use $crate::wire::field::Field;
                match self {
                    $( Message::$variant(body) => body.write(out, ()), )*
                }
            }

            pub(crate) fn arbitrary_body(
                opcode: Opcode,
                e: &mut $crate::wire::field::Entropy<'a>,
            ) -> Self {
                use $crate::wire::field::Field;
                match opcode {
                    $( Opcode::$variant => Message::$variant(<$ty>::arbitrary(e, ())), )*
                }
            }
        }

        $(
            impl<'a> From<$ty> for Message<'a> {
                fn from(body: $ty) -> Self {
                    Message::$variant(body)
                }
            }
        )*
    };
}
