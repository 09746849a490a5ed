#pragma once
// The parsed template: expressions and statements, each with the line and column it came from.

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "text/jinja/value.h"

namespace strata::text::jinja {

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

struct Expr {
  enum class Kind {
    Literal,  // literal
    Name,     // name
    List,     // children: items
    Tuple,    // children: items
    Dict,     // children: key, value, key, value, ...
    GetAttr,  // children[0] . name
    GetItem,  // children[0] [ children[1] ]
    Slice,    // children[0] [ children[1] : children[2] : children[3] ] (null = omitted)
    Call,     // children[0] ( children[1..], kwargs )
    Filter,   // children[0] | name ( children[1..], kwargs ); children[0] null in filter blocks
    Test,     // children[0] is [not] name ( children[1..] )
    Neg,      // - children[0]
    Pos,      // + children[0]
    Not,      // not children[0]
    Binary,   // children[0] name children[1]: + - * / // % ** ~
    Compare,  // children[0] ops[0] children[1] ops[1] children[2] ...
    And,      // children[0] and children[1]
    Or,       // children[0] or children[1]
    Cond,     // children[0] if children[1] else children[2] (null: undefined)
  };
  Kind kind;
  int line = 0;
  int column = 0;
  Value literal;
  std::string name;
  std::vector<ExprPtr> children;
  std::vector<std::pair<std::string, ExprPtr>> kwargs;
  std::vector<std::string> ops;
  bool negated = false;
};

struct Node;
using NodePtr = std::unique_ptr<Node>;
using Body = std::vector<NodePtr>;

struct Node {
  enum class Kind {
    Text,         // text
    Output,       // {{ expr }}
    If,           // branches (condition null for else)
    For,          // for targets in expr [if filter]: body [else else_body]
    Set,          // set targets = expr, or set targets[0].attribute = expr
    SetBlock,     // set targets[0] [| filter]: body
    Macro,        // macro name(params): body
    FilterBlock,  // filter chain: body
    Break,
    Continue,
  };
  Kind kind;
  int line = 0;
  int column = 0;
  std::string text;
  ExprPtr expr;  // Output, For iterable, Set value, SetBlock/FilterBlock filter chain
  std::vector<std::pair<ExprPtr, Body>> branches;
  std::vector<std::string> targets;
  std::string attribute;  // Set of a namespace attribute
  ExprPtr filter;         // For's inline `if`
  bool uses_loop = true;  // For: whether the body mentions `loop` (else no loop object is built)
  Body body;
  Body else_body;
  std::string name;                                     // Macro
  std::vector<std::pair<std::string, ExprPtr>> params;  // Macro: name, default (null: required)
};

// A parsed template; `origin` names it in errors.
struct Program {
  Body body;
  std::string origin;
};

}  // namespace strata::text::jinja
