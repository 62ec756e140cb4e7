//! Just enough of a Rust lexer to tell code from comments and literals: identifiers, `::`,
//! single punctuation characters, and literals whose text is dropped. Comments (doc comments
//! included) produce nothing, so a word in a comment or a string never counts as code.

/// One token of code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tok {
    /// An identifier or keyword; a raw identifier `r#name` is `name`.
    Ident(String),
    /// `::`
    PathSep,
    /// Any other punctuation character, one at a time.
    Punct(char),
    /// A string, character, byte or number literal; its text never matters here.
    Literal,
    /// `'a`, `'static` or a loop label.
    Lifetime,
    /// Put in by `source::strip_tests` where it removed `#[cfg(test)] mod name;`, so the
    /// module tree knows which file is a test module without treating it as code.
    TestModDecl(String),
}

/// A token and the 1-based line it starts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub tok: Tok,
    pub line: usize,
}

impl Token {
    pub fn is_ident(&self, name: &str) -> bool {
        matches!(&self.tok, Tok::Ident(text) if text == name)
    }

    pub fn is_punct(&self, c: char) -> bool {
        self.tok == Tok::Punct(c)
    }

    pub fn ident(&self) -> Option<&str> {
        match &self.tok {
            Tok::Ident(text) => Some(text),
            _ => None,
        }
    }
}

/// Splits Rust source into tokens. Never fails: text it does not understand becomes
/// punctuation, which at worst hides a path from the checks rather than inventing one.
pub fn lex(src: &str) -> Vec<Token> {
    let mut lexer = Lexer {
        chars: src.chars().collect(),
        pos: 0,
        line: 1,
        out: Vec::new(),
    };
    lexer.run();
    lexer.out
}

struct Lexer {
    chars: Vec<char>,
    pos: usize,
    line: usize,
    out: Vec<Token>,
}

fn is_ident_start(c: char) -> bool {
    c == '_' || c.is_alphabetic()
}

fn is_ident_continue(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

impl Lexer {
    fn peek(&self, ahead: usize) -> Option<char> {
        self.chars.get(self.pos + ahead).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek(0)?;
        self.pos += 1;
        if c == '\n' {
            self.line += 1;
        }
        Some(c)
    }

    fn push(&mut self, tok: Tok, line: usize) {
        self.out.push(Token { tok, line });
    }

    fn run(&mut self) {
        // A shebang line (`#!` not followed by `[`) is not code.
        if self.peek(0) == Some('#') && self.peek(1) == Some('!') && self.peek(2) != Some('[') {
            self.skip_line();
        }
        while let Some(c) = self.peek(0) {
            let line = self.line;
            match c {
                c if c.is_whitespace() => {
                    self.bump();
                }
                '/' if self.peek(1) == Some('/') => self.skip_line(),
                '/' if self.peek(1) == Some('*') => self.block_comment(),
                '"' => {
                    self.bump();
                    self.quoted('"');
                    self.push(Tok::Literal, line);
                }
                '\'' => self.quote_or_lifetime(),
                ':' if self.peek(1) == Some(':') => {
                    self.bump();
                    self.bump();
                    self.push(Tok::PathSep, line);
                }
                c if c.is_ascii_digit() => self.number(),
                c if is_ident_start(c) => {
                    if !self.prefixed_literal() {
                        self.ident();
                    }
                }
                c => {
                    self.bump();
                    self.push(Tok::Punct(c), line);
                }
            }
        }
    }

    fn skip_line(&mut self) {
        while let Some(c) = self.peek(0) {
            if c == '\n' {
                break;
            }
            self.bump();
        }
    }

    /// Block comments nest in Rust.
    fn block_comment(&mut self) {
        self.bump();
        self.bump();
        let mut depth = 1;
        while depth > 0 {
            match (self.bump(), self.peek(0)) {
                (Some('/'), Some('*')) => {
                    self.bump();
                    depth += 1;
                }
                (Some('*'), Some('/')) => {
                    self.bump();
                    depth -= 1;
                }
                (None, _) => break,
                _ => {}
            }
        }
    }

    /// The rest of a quoted literal whose opening quote is consumed; `\` escapes one char.
    fn quoted(&mut self, close: char) {
        while let Some(c) = self.bump() {
            if c == '\\' {
                self.bump();
            } else if c == close {
                break;
            }
        }
    }

    /// `'x'`, `'\n'` and `'\u{1F600}'` are characters; `'a` and `'static` are lifetimes.
    fn quote_or_lifetime(&mut self) {
        let line = self.line;
        if self.peek(1) == Some('\\') {
            self.bump();
            self.quoted('\'');
            self.push(Tok::Literal, line);
        } else if self.peek(2) == Some('\'') {
            self.bump();
            self.bump();
            self.bump();
            self.push(Tok::Literal, line);
        } else {
            self.bump();
            while self.peek(0).is_some_and(is_ident_continue) {
                self.bump();
            }
            self.push(Tok::Lifetime, line);
        }
    }

    fn number(&mut self) {
        let line = self.line;
        while let Some(c) = self.peek(0) {
            let fraction = c == '.' && self.peek(1).is_some_and(|next| next.is_ascii_digit());
            if !(is_ident_continue(c) || fraction) {
                break;
            }
            self.bump();
        }
        self.push(Tok::Literal, line);
    }

    fn ident(&mut self) {
        let line = self.line;
        let mut text = String::new();
        while let Some(c) = self.peek(0) {
            if !is_ident_continue(c) {
                break;
            }
            text.push(c);
            self.bump();
        }
        self.push(Tok::Ident(text), line);
    }

    /// Byte, C and raw strings (`b"…"`, `c"…"`, `r#"…"#`, `br"…"`), byte characters
    /// (`b'x'`) and raw identifiers (`r#type`). Returns false when the `r`, `b` or `c` only
    /// starts an ordinary identifier.
    fn prefixed_literal(&mut self) -> bool {
        let line = self.line;
        let first = self.peek(0);
        let raw_at = match (first, self.peek(1)) {
            (Some('r'), _) => Some(1),
            (Some('b' | 'c'), Some('r')) => Some(2),
            _ => None,
        };
        if let Some(after_r) = raw_at {
            let mut hashes = 0;
            while self.peek(after_r + hashes) == Some('#') {
                hashes += 1;
            }
            if self.peek(after_r + hashes) == Some('"') {
                for _ in 0..=after_r + hashes {
                    self.bump();
                }
                self.raw_string_body(hashes);
                self.push(Tok::Literal, line);
                return true;
            }
            if first == Some('r') && hashes == 1 && self.peek(2).is_some_and(is_ident_start) {
                self.bump();
                self.bump();
                self.ident();
                return true;
            }
        }
        match (first, self.peek(1)) {
            (Some('b' | 'c'), Some('"')) => {
                self.bump();
                self.bump();
                self.quoted('"');
                self.push(Tok::Literal, line);
                true
            }
            (Some('b'), Some('\'')) => {
                self.bump();
                self.bump();
                self.quoted('\'');
                self.push(Tok::Literal, line);
                true
            }
            _ => false,
        }
    }

    /// Runs to `"` followed by `hashes` `#`s.
    fn raw_string_body(&mut self, hashes: usize) {
        while let Some(c) = self.bump() {
            if c == '"' && (0..hashes).all(|i| self.peek(i) == Some('#')) {
                for _ in 0..hashes {
                    self.bump();
                }
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idents(src: &str) -> Vec<String> {
        lex(src)
            .into_iter()
            .filter_map(|t| t.ident().map(str::to_owned))
            .collect()
    }

    #[test]
    fn comments_and_literals_produce_no_identifiers() {
        let src = r####"
            // tonic in a line comment
            /// tonic in a doc comment
            /* tonic /* nested */ tonic */
            let a = "tonic::Status";
            let b = r#"tonic "quoted" inside"#;
            let c = b"tonic";
            let d = 'x';
            let e = '\'';
            let f: &'static str = br##"tonic"##;
            fn g<'a>(x: &'a u8) {}
        "####;
        let found = idents(src);
        assert!(!found.iter().any(|i| i == "tonic"), "{found:?}");
        assert!(found.contains(&"g".to_owned()));
        assert!(found.contains(&"str".to_owned()));
    }

    #[test]
    fn paths_keep_their_lines_and_raw_identifiers_lose_their_prefix() {
        let tokens = lex("use a::b;\n\nlet r#type = crate::x;");
        let crate_token = tokens.iter().find(|t| t.is_ident("crate")).unwrap();
        assert_eq!(crate_token.line, 3);
        assert!(tokens.iter().any(|t| t.is_ident("type")));
        assert_eq!(tokens.iter().filter(|t| t.tok == Tok::PathSep).count(), 2);
    }
}
