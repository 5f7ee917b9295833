//! [`ArenaString`]: a growable UTF-8 string in an arena, and [`arena_format!`].

use core::fmt;
use core::ops::{Deref, DerefMut};

use allocator_api2::alloc::AllocError;
use allocator_api2::vec::Vec;
use pagekeep_mmap::{DefaultPages, PageSource};

use crate::arena::Arena;

/// A growable UTF-8 string whose bytes live in an arena.
///
/// It grows as a `Vec` does, by doubling (or by what it needs when doubling would not
/// fit under the arena's limit); while it is the arena's latest allocation it
/// grows in place (the arena moves its bump pointer), otherwise it moves to fresh room
/// and the old bytes stay allocated until the arena is reset. Dropping it gives its bytes
/// back when it is the latest allocation; [`into_str`](ArenaString::into_str) keeps them
/// for as long as the arena is borrowed, trimmed to the length.
///
/// Build one with [`new_in`](ArenaString::new_in), [`from_str_in`](ArenaString::from_str_in),
/// [`from_fmt`](ArenaString::from_fmt), [`arena_format!`](crate::arena_format) or by
/// writing to it through [`core::fmt::Write`].
///
/// # Examples
///
/// ```
/// use pagekeep_arena::{Arena, ArenaString, arena_format};
/// use core::fmt::Write;
///
/// let arena = Arena::new();
/// let mut line = arena_format!(in &arena, "{} {}", "GET", "/index.html");
/// line.push(' ');
/// line.push_str("HTTP/1.1");
/// write!(line, " ({} bytes)", 0).unwrap();
/// assert_eq!(line, "GET /index.html HTTP/1.1 (0 bytes)");
/// let line: &mut str = line.into_str(); // lives as long as the arena's borrow
/// line.make_ascii_lowercase();
/// assert_eq!(line, "get /index.html http/1.1 (0 bytes)");
/// ```
pub struct ArenaString<'a, S: PageSource = DefaultPages, const MIN_ALIGN: usize = 1> {
    /// Always valid UTF-8.
    bytes: Vec<u8, &'a Arena<S, MIN_ALIGN>>,
}

/// The panic of the infallible methods.
#[cold]
#[inline(never)]
#[track_caller]
fn string_failed(bytes: usize) -> ! {
    panic!("arena string of {bytes} more bytes failed: limit reached or page source exhausted")
}

/// The panic of a formatting implementation that returns an error of its own, as
/// `format!` panics.
#[cold]
#[inline(never)]
#[track_caller]
fn formatting_failed() -> ! {
    panic!("a formatting trait implementation returned an error when the underlying stream did not")
}

impl<'a, S: PageSource, const MIN_ALIGN: usize> ArenaString<'a, S, MIN_ALIGN> {
    /// An empty string; it allocates nothing until something is pushed.
    pub fn new_in(arena: &'a Arena<S, MIN_ALIGN>) -> Self {
        ArenaString {
            bytes: Vec::new_in(arena),
        }
    }

    /// An empty string with room for `bytes` bytes.
    ///
    /// # Panics
    /// When the allocation fails.
    ///
    /// # Examples
    ///
    /// ```
    /// use pagekeep_arena::{Arena, ArenaString};
    ///
    /// let arena = Arena::new();
    /// let mut text = ArenaString::with_capacity_in(16, &arena);
    /// text.push_str("sixteen bytes ok");
    /// assert_eq!((text.len(), text.capacity()), (16, 16));
    /// ```
    pub fn with_capacity_in(bytes: usize, arena: &'a Arena<S, MIN_ALIGN>) -> Self {
        ArenaString::try_with_capacity_in(bytes, arena)
            .unwrap_or_else(|AllocError| string_failed(bytes))
    }

    /// An empty string with room for `bytes` bytes.
    ///
    /// # Errors
    /// As [`Arena::try_alloc`].
    pub fn try_with_capacity_in(
        bytes: usize,
        arena: &'a Arena<S, MIN_ALIGN>,
    ) -> Result<Self, AllocError> {
        let mut string = ArenaString::new_in(arena);
        string
            .bytes
            .try_reserve_exact(bytes)
            .map_err(|_| AllocError)?;
        Ok(string)
    }

    /// A copy of `text`.
    ///
    /// # Panics
    /// When the allocation fails.
    ///
    /// # Examples
    ///
    /// ```
    /// use pagekeep_arena::{Arena, ArenaString};
    ///
    /// let arena = Arena::new();
    /// let name = ArenaString::from_str_in("arena", &arena);
    /// assert_eq!(name.len(), 5);
    /// ```
    pub fn from_str_in(text: &str, arena: &'a Arena<S, MIN_ALIGN>) -> Self {
        ArenaString::try_from_str_in(text, arena)
            .unwrap_or_else(|AllocError| string_failed(text.len()))
    }

    /// A copy of `text`.
    ///
    /// # Errors
    /// As [`Arena::try_alloc`].
    pub fn try_from_str_in(text: &str, arena: &'a Arena<S, MIN_ALIGN>) -> Result<Self, AllocError> {
        let mut string = ArenaString::try_with_capacity_in(text.len(), arena)?;
        string.bytes.extend_from_slice(text.as_bytes());
        Ok(string)
    }

    /// The text of `args` (from `format_args!`): what `format!` makes, in the arena.
    /// [`arena_format!`](crate::arena_format) is a shorthand for this.
    ///
    /// # Panics
    /// When the allocation fails, or if a formatting trait implementation returns an
    /// error of its own (as `format!` does).
    ///
    /// # Examples
    ///
    /// ```
    /// use pagekeep_arena::{Arena, ArenaString};
    ///
    /// let arena = Arena::new();
    /// let status = ArenaString::from_fmt(&arena, format_args!("{} {}", 404, "Not Found"));
    /// assert_eq!(status, "404 Not Found");
    /// ```
    pub fn from_fmt(arena: &'a Arena<S, MIN_ALIGN>, args: fmt::Arguments<'_>) -> Self {
        ArenaString::try_from_fmt(arena, args).unwrap_or_else(|AllocError| string_failed(0))
    }

    /// The text of `args`, or an error when the arena has no room for it.
    ///
    /// # Errors
    /// As [`Arena::try_alloc`]; what was written so far is given back.
    ///
    /// # Panics
    /// If a formatting trait implementation returns an error of its own (as `format!`
    /// does).
    ///
    /// # Examples
    ///
    /// ```
    /// use pagekeep_arena::{Arena, ArenaConfig, ArenaString};
    ///
    /// let arena = Arena::with_config(ArenaConfig::new().limit_bytes(16));
    /// assert!(ArenaString::try_from_fmt(&arena, format_args!("{:>40}", "wide")).is_err());
    /// assert_eq!(arena.stats().allocated_bytes, 0);
    /// let short = ArenaString::try_from_fmt(&arena, format_args!("{}", 12))?;
    /// assert_eq!(short, "12");
    /// # Ok::<(), pagekeep_arena::AllocError>(())
    /// ```
    pub fn try_from_fmt(
        arena: &'a Arena<S, MIN_ALIGN>,
        args: fmt::Arguments<'_>,
    ) -> Result<Self, AllocError> {
        let mut string = ArenaString::new_in(arena);
        if let Some(text) = args.as_str() {
            string.try_push_str(text)?;
            return Ok(string);
        }
        /// Writes into the string and remembers whether an error was the arena's.
        struct Sink<'s, 'a, S: PageSource, const MIN_ALIGN: usize> {
            string: &'s mut ArenaString<'a, S, MIN_ALIGN>,
            out_of_room: bool,
        }
        impl<S: PageSource, const MIN_ALIGN: usize> fmt::Write for Sink<'_, '_, S, MIN_ALIGN> {
            fn write_str(&mut self, text: &str) -> fmt::Result {
                self.string.try_push_str(text).map_err(|AllocError| {
                    self.out_of_room = true;
                    fmt::Error
                })
            }
        }
        let mut sink = Sink {
            string: &mut string,
            out_of_room: false,
        };
        match fmt::write(&mut sink, args) {
            Ok(()) => Ok(string),
            Err(fmt::Error) if sink.out_of_room => Err(AllocError),
            Err(fmt::Error) => formatting_failed(),
        }
    }

    /// Appends `text`.
    ///
    /// # Panics
    /// When the allocation fails.
    pub fn push_str(&mut self, text: &str) {
        self.try_push_str(text)
            .unwrap_or_else(|AllocError| string_failed(text.len()));
    }

    /// Appends `text`.
    ///
    /// # Errors
    /// As [`Arena::try_alloc`]; the string is then unchanged.
    ///
    /// # Examples
    ///
    /// ```
    /// use pagekeep_arena::{Arena, ArenaConfig, ArenaString};
    ///
    /// let arena = Arena::with_config(ArenaConfig::new().limit_bytes(4));
    /// let mut word = ArenaString::new_in(&arena);
    /// word.try_push_str("abc")?;
    /// assert!(word.try_push_str("de").is_err());
    /// assert_eq!(word, "abc");
    /// # Ok::<(), pagekeep_arena::AllocError>(())
    /// ```
    pub fn try_push_str(&mut self, text: &str) -> Result<(), AllocError> {
        // Doubling when there is room for it, exactly what is needed when there is not
        // (close to the limit), so the string fills the arena's last bytes too.
        if self.bytes.try_reserve(text.len()).is_err() {
            self.bytes
                .try_reserve_exact(text.len())
                .map_err(|_| AllocError)?;
        }
        self.bytes.extend_from_slice(text.as_bytes());
        Ok(())
    }

    /// Appends `character`.
    ///
    /// # Panics
    /// When the allocation fails.
    pub fn push(&mut self, character: char) {
        self.try_push(character)
            .unwrap_or_else(|AllocError| string_failed(character.len_utf8()));
    }

    /// Appends `character`.
    ///
    /// # Errors
    /// As [`Arena::try_alloc`]; the string is then unchanged.
    pub fn try_push(&mut self, character: char) -> Result<(), AllocError> {
        self.try_push_str(character.encode_utf8(&mut [0; 4]))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        // SAFETY: `bytes` is always UTF-8: only whole `str`s are appended.
        unsafe { core::str::from_utf8_unchecked(&self.bytes) }
    }

    /// The text, mutably (`str`'s methods keep it UTF-8).
    pub fn as_mut_str(&mut self) -> &mut str {
        // SAFETY: as in `as_str`.
        unsafe { core::str::from_utf8_unchecked_mut(&mut self.bytes) }
    }

    /// Bytes the string can hold without growing.
    pub fn capacity(&self) -> usize {
        self.bytes.capacity()
    }

    /// Empties the string, keeping its room.
    pub fn clear(&mut self) {
        self.bytes.clear();
    }

    /// The arena the string lives in.
    pub fn arena(&self) -> &'a Arena<S, MIN_ALIGN> {
        self.bytes.allocator()
    }

    /// Gives the text up to the arena: it stays there (for the arena's borrow) and is
    /// never freed before a reset. Room beyond the length is given back first when the
    /// string is the latest allocation.
    ///
    /// # Examples
    ///
    /// ```
    /// use pagekeep_arena::{Arena, arena_format};
    ///
    /// let arena = Arena::new();
    /// let greeting: &str = arena_format!(in &arena, "hello, {}", "world").into_str();
    /// let other = arena.alloc_str("next"); // the string lives on
    /// assert_eq!((greeting, &*other), ("hello, world", "next"));
    /// ```
    pub fn into_str(self) -> &'a mut str {
        let mut bytes = self.bytes;
        bytes.shrink_to_fit();
        let bytes = bytes.leak();
        // SAFETY: as in `as_str`.
        unsafe { core::str::from_utf8_unchecked_mut(bytes) }
    }
}

/// Formats into an [`ArenaString`]: `arena_format!(in arena, "...", args)`, where `arena`
/// is a `&Arena` (or anything that dereferences to one, such as a pool lease).
///
/// # Panics
/// When the arena has no room (use [`ArenaString::try_from_fmt`] to get an error
/// instead), or if a formatting trait implementation returns an error of its own.
///
/// # Examples
///
/// ```
/// use pagekeep_arena::{Arena, arena_format};
///
/// let arena = Arena::new();
/// let path = arena_format!(in &arena, "/users/{}/posts/{}", 17, 4);
/// assert_eq!(path, "/users/17/posts/4");
/// ```
#[macro_export]
macro_rules! arena_format {
    (in $arena:expr, $($arguments:tt)*) => {
        $crate::ArenaString::from_fmt($arena, ::core::format_args!($($arguments)*))
    };
}

impl<S: PageSource, const MIN_ALIGN: usize> fmt::Write for ArenaString<'_, S, MIN_ALIGN> {
    /// Appends `text`, or fails with `fmt::Error` (the string unchanged) when the arena
    /// has no room.
    fn write_str(&mut self, text: &str) -> fmt::Result {
        self.try_push_str(text).map_err(|AllocError| fmt::Error)
    }

    fn write_char(&mut self, character: char) -> fmt::Result {
        self.try_push(character).map_err(|AllocError| fmt::Error)
    }
}

impl<S: PageSource, const MIN_ALIGN: usize> Deref for ArenaString<'_, S, MIN_ALIGN> {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl<S: PageSource, const MIN_ALIGN: usize> DerefMut for ArenaString<'_, S, MIN_ALIGN> {
    fn deref_mut(&mut self) -> &mut str {
        self.as_mut_str()
    }
}

impl<S: PageSource, const MIN_ALIGN: usize> AsRef<str> for ArenaString<'_, S, MIN_ALIGN> {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl<S: PageSource, const MIN_ALIGN: usize> fmt::Debug for ArenaString<'_, S, MIN_ALIGN> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl<S: PageSource, const MIN_ALIGN: usize> fmt::Display for ArenaString<'_, S, MIN_ALIGN> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.as_str(), f)
    }
}

impl<S: PageSource, const MIN_ALIGN: usize> PartialEq for ArenaString<'_, S, MIN_ALIGN> {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl<S: PageSource, const MIN_ALIGN: usize> Eq for ArenaString<'_, S, MIN_ALIGN> {}

impl<S: PageSource, const MIN_ALIGN: usize> PartialEq<str> for ArenaString<'_, S, MIN_ALIGN> {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl<S: PageSource, const MIN_ALIGN: usize> PartialEq<&str> for ArenaString<'_, S, MIN_ALIGN> {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}
