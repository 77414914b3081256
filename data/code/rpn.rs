//! A reverse Polish notation calculator: `3 4 + 2 *` evaluates to 14.
//!
//! Reads one expression per line from standard input and prints its value, or the reason it
//! could not be evaluated.

use std::fmt;
use std::io::{self, BufRead, Write};

/// One element of an expression.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Token {
    Number(f64),
    Op(Op),
}

/// The binary operators the calculator knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Add,
    Sub,
    Mul,
    Div,
    Pow,
}

impl Op {
    fn apply(self, a: f64, b: f64) -> Result<f64, EvalError> {
        match self {
            Op::Add => Ok(a + b),
            Op::Sub => Ok(a - b),
            Op::Mul => Ok(a * b),
            Op::Div if b == 0.0 => Err(EvalError::DivisionByZero),
            Op::Div => Ok(a / b),
            Op::Pow => Ok(a.powf(b)),
        }
    }
}

/// Why an expression has no value.
#[derive(Debug, PartialEq)]
enum EvalError {
    UnknownToken(String),
    StackUnderflow,
    LeftOver(usize),
    DivisionByZero,
    Empty,
}

impl fmt::Display for EvalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EvalError::UnknownToken(t) => write!(f, "unknown token {t:?}"),
            EvalError::StackUnderflow => write!(f, "an operator lacks operands"),
            EvalError::LeftOver(n) => write!(f, "{n} values left over"),
            EvalError::DivisionByZero => write!(f, "division by zero"),
            EvalError::Empty => write!(f, "empty expression"),
        }
    }
}

/// Split a line into tokens.
fn tokenize(line: &str) -> Result<Vec<Token>, EvalError> {
    line.split_whitespace()
        .map(|word| match word {
            "+" => Ok(Token::Op(Op::Add)),
            "-" => Ok(Token::Op(Op::Sub)),
            "*" | "x" => Ok(Token::Op(Op::Mul)),
            "/" => Ok(Token::Op(Op::Div)),
            "^" => Ok(Token::Op(Op::Pow)),
            _ => word
                .parse()
                .map(Token::Number)
                .map_err(|_| EvalError::UnknownToken(word.to_string())),
        })
        .collect()
}

/// Evaluate tokens with a value stack.
fn eval(tokens: &[Token]) -> Result<f64, EvalError> {
    let mut stack = Vec::new();
    for token in tokens {
        match *token {
            Token::Number(n) => stack.push(n),
            Token::Op(op) => {
                let b = stack.pop().ok_or(EvalError::StackUnderflow)?;
                let a = stack.pop().ok_or(EvalError::StackUnderflow)?;
                stack.push(op.apply(a, b)?);
            }
        }
    }
    match stack.len() {
        0 => Err(EvalError::Empty),
        1 => Ok(stack[0]),
        n => Err(EvalError::LeftOver(n - 1)),
    }
}

fn main() -> io::Result<()> {
    let stdin = io::stdin();
    let mut out = io::stdout().lock();
    for line in stdin.lock().lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        match tokenize(&line).and_then(|t| eval(&t)) {
            Ok(value) => writeln!(out, "{value}")?,
            Err(err) => writeln!(out, "error: {err}")?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn calc(line: &str) -> Result<f64, EvalError> {
        eval(&tokenize(line)?)
    }

    #[test]
    fn evaluates_nested_expressions() {
        assert_eq!(calc("3 4 + 2 *"), Ok(14.0));
        assert_eq!(calc("2 3 ^ 1 -"), Ok(7.0));
    }

    #[test]
    fn reports_errors() {
        assert_eq!(calc("1 +"), Err(EvalError::StackUnderflow));
        assert_eq!(calc("1 0 /"), Err(EvalError::DivisionByZero));
        assert_eq!(calc("1 2"), Err(EvalError::LeftOver(1)));
        assert_eq!(calc("two"), Err(EvalError::UnknownToken("two".into())));
    }
}
