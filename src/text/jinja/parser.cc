#include "text/jinja/parser.h"

#include <fmt/format.h>

#include <algorithm>
#include <initializer_list>

#include "strata/text/chat_template.h"
#include "text/jinja/lexer.h"
#include "text/jinja/unicode.h"

namespace strata::text::jinja {
namespace {

// Nesting deeper than this (parentheses, blocks) is refused: real templates nest a dozen levels,
// and the interpreter recurses once per level.
constexpr int kMaxNesting = 100;
constexpr int kMaxChain = 400;

class Parser {
 public:
  Parser(std::vector<Token> tokens, const std::string& origin)
      : tokens_(std::move(tokens)), origin_(origin) {}

  Body parse_all() {
    std::string end;
    Body body = parse_body({}, end);
    return body;
  }

 private:
  // --- token stream -------------------------------------------------------------------------
  const Token& cur() const { return tokens_[pos_]; }
  const Token& peek(std::size_t k = 1) const {
    return tokens_[std::min(pos_ + k, tokens_.size() - 1)];
  }
  void advance() {
    if (pos_ + 1 < tokens_.size()) ++pos_;
  }
  bool is_op(const char* op) const { return cur().type == TokenType::Op && cur().value == op; }
  bool is_name(const char* name) const {
    return cur().type == TokenType::Name && cur().value == name;
  }
  bool skip_op(const char* op) {
    if (!is_op(op)) return false;
    advance();
    return true;
  }
  bool skip_name(const char* name) {
    if (!is_name(name)) return false;
    advance();
    return true;
  }

  [[noreturn]] void error_at(const Token& t, const std::string& message) const {
    throw TemplateError(fmt::format("{}:{}:{}: {}", origin_, t.line, t.column, message));
  }

  static std::string describe(const Token& t) {
    switch (t.type) {
      case TokenType::Text:
        return "template text";
      case TokenType::VarBegin:
        return "'{{'";
      case TokenType::VarEnd:
        return "'}}'";
      case TokenType::BlockBegin:
        return "'{%'";
      case TokenType::BlockEnd:
        return "'%}'";
      case TokenType::End:
        return "end of template";
      case TokenType::String:
        return "a string";
      default:
        return "'" + t.value + "'";
    }
  }

  void expect_op(const char* op) {
    if (!skip_op(op)) error_at(cur(), fmt::format("expected '{}', found {}", op, describe(cur())));
  }
  void expect_block_end() {
    if (cur().type != TokenType::BlockEnd) {
      error_at(cur(), fmt::format("expected '%}}', found {}", describe(cur())));
    }
    advance();
  }
  std::string expect_name(const char* what) {
    if (cur().type != TokenType::Name) {
      error_at(cur(), fmt::format("expected {}, found {}", what, describe(cur())));
    }
    std::string n = cur().value;
    advance();
    return n;
  }

  template <typename T>
  static std::unique_ptr<T> make(typename T::Kind kind, const Token& at) {
    auto n = std::make_unique<T>();
    n->kind = kind;
    n->line = at.line;
    n->column = at.column;
    return n;
  }

  // Left-deep chains (`a + b + c ...`, `x.a.b ...`, `x|f|g ...`) nest the tree without recursion in
  // the parser; capping each chain keeps evaluation and destruction of the tree shallow.
  void count_chain(int& n, const Token& at) const {
    if (++n > kMaxChain)
      error_at(at, fmt::format("expression chain longer than {} terms", kMaxChain));
  }

  struct DepthGuard {
    DepthGuard(Parser& p, const Token& at) : p_(p) {
      if (++p_.depth_ > kMaxNesting) {
        p_.error_at(at, fmt::format("template nested deeper than {} levels", kMaxNesting));
      }
    }
    ~DepthGuard() { --p_.depth_; }
    Parser& p_;
  };

  // --- statements ---------------------------------------------------------------------------
  // Parses until `{% name %}` with name in `ends` (left unconsumed after the name: the caller
  // reads the rest of that tag); `end` receives the name. At top level (ends empty) until the end.
  Body parse_body(std::initializer_list<const char*> ends, std::string& end) {
    DepthGuard guard(*this, cur());
    Body body;
    while (true) {
      const Token& t = cur();
      switch (t.type) {
        case TokenType::End:
          if (ends.size() != 0) {
            std::string names;
            for (const char* e : ends)
              names += std::string(names.empty() ? "" : " or ") + "'" + e + "'";
            error_at(t, fmt::format("unexpected end of template: expected {}", names));
          }
          return body;
        case TokenType::Text: {
          auto n = make<Node>(Node::Kind::Text, t);
          n->text = t.value;
          body.push_back(std::move(n));
          advance();
          break;
        }
        case TokenType::VarBegin: {
          auto n = make<Node>(Node::Kind::Output, t);
          advance();
          n->expr = parse_tuple(true);
          if (cur().type != TokenType::VarEnd) {
            error_at(cur(), fmt::format("expected '}}}}', found {}", describe(cur())));
          }
          advance();
          body.push_back(std::move(n));
          break;
        }
        case TokenType::BlockBegin: {
          const Token& name = peek();
          if (name.type != TokenType::Name) error_at(name, "expected a tag name after '{%'");
          for (const char* e : ends) {
            if (name.value == e) {
              advance();
              advance();
              end = e;
              return body;
            }
          }
          advance();
          body.push_back(parse_statement());
          break;
        }
        default:
          error_at(t, fmt::format("unexpected {}", describe(t)));
      }
    }
  }

  NodePtr parse_statement() {
    const Token& t = cur();
    const std::string& name = t.value;
    if (name == "if") return parse_if();
    if (name == "for") return parse_for();
    if (name == "set") return parse_set();
    if (name == "macro") return parse_macro();
    if (name == "filter") return parse_filter_block();
    if (name == "break" || name == "continue") {
      if (loop_depth_ == 0) error_at(t, fmt::format("'{}' outside of a loop", name));
      auto n = make<Node>(name == "break" ? Node::Kind::Break : Node::Kind::Continue, t);
      advance();
      expect_block_end();
      return n;
    }
    if (name == "generation") {
      // transformers' AssistantTracker: marks assistant text for masks; renders its body as is.
      auto n = make<Node>(Node::Kind::If, t);
      advance();
      expect_block_end();
      std::string end;
      Body body = parse_body({"endgeneration"}, end);
      expect_block_end();
      auto yes = make<Expr>(Expr::Kind::Literal, t);
      yes->literal = Value::from_bool(true);
      n->branches.emplace_back(std::move(yes), std::move(body));
      return n;
    }
    static const char* const kKnown[] = {"elif",      "else",          "endif",
                                         "endfor",    "endset",        "endmacro",
                                         "endfilter", "endgeneration", "endraw"};
    for (const char* k : kKnown) {
      if (name == k) error_at(t, fmt::format("unexpected '{}' without its opening tag", name));
    }
    error_at(t, fmt::format("unsupported tag '{}' (chat templates support if, for, set, macro, "
                            "filter, break, continue, raw, generation)",
                            name));
  }

  NodePtr parse_if() {
    auto n = make<Node>(Node::Kind::If, cur());
    advance();
    ExprPtr cond = parse_tuple(true);
    expect_block_end();
    while (true) {
      std::string end;
      Body body = parse_body({"elif", "else", "endif"}, end);
      n->branches.emplace_back(std::move(cond), std::move(body));
      if (end == "elif") {
        cond = parse_tuple(true);
        expect_block_end();
      } else if (end == "else") {
        expect_block_end();
        Body else_body = parse_body({"endif"}, end);
        n->branches.emplace_back(nullptr, std::move(else_body));
        expect_block_end();
        return n;
      } else {
        expect_block_end();
        return n;
      }
    }
  }

  std::vector<std::string> parse_targets() {
    std::vector<std::string> targets;
    const bool paren = skip_op("(");
    do {
      targets.push_back(expect_name("a variable name"));
    } while (skip_op(","));
    if (paren) expect_op(")");
    return targets;
  }

  NodePtr parse_for() {
    auto n = make<Node>(Node::Kind::For, cur());
    advance();
    n->targets = parse_targets();
    if (!skip_name("in")) error_at(cur(), fmt::format("expected 'in', found {}", describe(cur())));
    n->expr = parse_tuple(false);
    if (skip_name("if")) n->filter = parse_tuple(true);
    if (is_name("recursive")) error_at(cur(), "recursive loops are not supported");
    expect_block_end();
    ++loop_depth_;
    std::string end;
    const std::size_t body_start = pos_;
    n->body = parse_body({"else", "endfor"}, end);
    --loop_depth_;
    n->uses_loop =
        std::any_of(tokens_.begin() + static_cast<std::ptrdiff_t>(body_start),
                    tokens_.begin() + static_cast<std::ptrdiff_t>(pos_),
                    [](const Token& t) { return t.type == TokenType::Name && t.value == "loop"; });
    if (end == "else") {
      expect_block_end();
      n->else_body = parse_body({"endfor"}, end);
    }
    expect_block_end();
    return n;
  }

  NodePtr parse_set() {
    const Token& at = cur();
    advance();
    std::vector<std::string> targets;
    std::string attribute;
    const Token& first = cur();
    targets.push_back(expect_name("a variable name after 'set'"));
    if (skip_op(".")) {
      attribute = expect_name("an attribute name");
    } else {
      while (skip_op(",")) targets.push_back(expect_name("a variable name"));
    }
    if (skip_op("=")) {
      auto n = make<Node>(Node::Kind::Set, at);
      n->targets = std::move(targets);
      n->attribute = std::move(attribute);
      n->expr = parse_tuple(true);
      expect_block_end();
      return n;
    }
    if (!attribute.empty() || targets.size() != 1) {
      error_at(first, "a block set assigns one plain variable");
    }
    auto n = make<Node>(Node::Kind::SetBlock, at);
    n->targets = std::move(targets);
    if (is_op("|")) n->expr = parse_filters(nullptr, at);
    expect_block_end();
    std::string end;
    n->body = parse_body({"endset"}, end);
    expect_block_end();
    return n;
  }

  NodePtr parse_macro() {
    auto n = make<Node>(Node::Kind::Macro, cur());
    advance();
    n->name = expect_name("a macro name");
    expect_op("(");
    while (!is_op(")")) {
      if (!n->params.empty()) expect_op(",");
      if (is_op(")")) break;
      std::string param = expect_name("a parameter name");
      ExprPtr def;
      if (skip_op("=")) def = parse_expression(true);
      n->params.emplace_back(std::move(param), std::move(def));
    }
    expect_op(")");
    expect_block_end();
    ++macro_depth_;
    const int saved_loop = loop_depth_;
    loop_depth_ = 0;
    std::string end;
    n->body = parse_body({"endmacro"}, end);
    loop_depth_ = saved_loop;
    --macro_depth_;
    if (cur().type == TokenType::Name) advance();  // {% endmacro name %}
    expect_block_end();
    return n;
  }

  NodePtr parse_filter_block() {
    const Token& at = cur();
    auto n = make<Node>(Node::Kind::FilterBlock, at);
    advance();
    n->expr = parse_filters(nullptr, at, /*start_inline=*/true);
    expect_block_end();
    std::string end;
    n->body = parse_body({"endfilter"}, end);
    expect_block_end();
    return n;
  }

  // --- expressions --------------------------------------------------------------------------
  // A comma-separated list becomes a tuple (as `{{ a, b }}` or `set x = 1, 2`).
  ExprPtr parse_tuple(bool with_condexpr) {
    const Token& at = cur();
    ExprPtr first = parse_expression(with_condexpr);
    if (!is_op(",")) return first;
    auto t = make<Expr>(Expr::Kind::Tuple, at);
    t->children.push_back(std::move(first));
    while (skip_op(",")) {
      if (cur().type == TokenType::BlockEnd || cur().type == TokenType::VarEnd) break;
      t->children.push_back(parse_expression(with_condexpr));
    }
    return t;
  }

  ExprPtr parse_expression(bool with_condexpr) {
    DepthGuard guard(*this, cur());
    if (!with_condexpr) return parse_or();
    ExprPtr expr = parse_or();
    int n = 0;
    while (is_name("if")) {
      count_chain(n, cur());
      const Token& at = cur();
      advance();
      auto c = make<Expr>(Expr::Kind::Cond, at);
      ExprPtr cond = parse_or();
      ExprPtr other;
      if (skip_name("else")) other = parse_expression(true);
      c->children.push_back(std::move(expr));
      c->children.push_back(std::move(cond));
      c->children.push_back(std::move(other));
      expr = std::move(c);
    }
    return expr;
  }

  ExprPtr binary(Expr::Kind kind, const Token& at, ExprPtr l, ExprPtr r, std::string op = {}) {
    auto e = make<Expr>(kind, at);
    e->name = std::move(op);
    e->children.push_back(std::move(l));
    e->children.push_back(std::move(r));
    return e;
  }

  ExprPtr parse_or() {
    ExprPtr l = parse_and();
    int n = 0;
    while (is_name("or")) {
      count_chain(n, cur());
      const Token& at = cur();
      advance();
      l = binary(Expr::Kind::Or, at, std::move(l), parse_and());
    }
    return l;
  }
  ExprPtr parse_and() {
    ExprPtr l = parse_not();
    int n = 0;
    while (is_name("and")) {
      count_chain(n, cur());
      const Token& at = cur();
      advance();
      l = binary(Expr::Kind::And, at, std::move(l), parse_not());
    }
    return l;
  }
  ExprPtr parse_not() {
    if (is_name("not")) {
      DepthGuard guard(*this, cur());
      auto n = make<Expr>(Expr::Kind::Not, cur());
      advance();
      n->children.push_back(parse_not());
      return n;
    }
    return parse_compare();
  }
  ExprPtr parse_compare() {
    const Token& at = cur();
    ExprPtr first = parse_math1();
    std::unique_ptr<Expr> cmp;
    int n = 0;
    while (true) {
      count_chain(n, cur());
      std::string op;
      if (cur().type == TokenType::Op &&
          (is_op("==") || is_op("!=") || is_op("<") || is_op(">") || is_op("<=") || is_op(">="))) {
        op = cur().value;
        advance();
      } else if (is_name("in")) {
        op = "in";
        advance();
      } else if (is_name("not") && peek().type == TokenType::Name && peek().value == "in") {
        op = "notin";
        advance();
        advance();
      } else {
        break;
      }
      if (!cmp) {
        cmp = make<Expr>(Expr::Kind::Compare, at);
        cmp->children.push_back(std::move(first));
      }
      cmp->ops.push_back(op);
      cmp->children.push_back(parse_math1());
    }
    return cmp ? std::move(cmp) : std::move(first);
  }
  ExprPtr parse_math1() {
    ExprPtr l = parse_concat();
    int n = 0;
    while (is_op("+") || is_op("-")) {
      count_chain(n, cur());
      const Token& at = cur();
      std::string op = at.value;
      advance();
      l = binary(Expr::Kind::Binary, at, std::move(l), parse_concat(), op);
    }
    return l;
  }
  ExprPtr parse_concat() {
    ExprPtr l = parse_math2();
    int n = 0;
    while (is_op("~")) {
      count_chain(n, cur());
      const Token& at = cur();
      advance();
      l = binary(Expr::Kind::Binary, at, std::move(l), parse_math2(), "~");
    }
    return l;
  }
  ExprPtr parse_math2() {
    ExprPtr l = parse_pow();
    int n = 0;
    while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
      count_chain(n, cur());
      const Token& at = cur();
      std::string op = at.value;
      advance();
      l = binary(Expr::Kind::Binary, at, std::move(l), parse_pow(), op);
    }
    return l;
  }
  ExprPtr parse_pow() {
    ExprPtr l = parse_unary(true);
    int n = 0;
    while (is_op("**")) {
      count_chain(n, cur());
      const Token& at = cur();
      advance();
      l = binary(Expr::Kind::Binary, at, std::move(l), parse_unary(true), "**");
    }
    return l;
  }
  ExprPtr parse_unary(bool with_filter) {
    DepthGuard guard(*this, cur());
    const Token& at = cur();
    ExprPtr node;
    if (is_op("-") || is_op("+")) {
      node = make<Expr>(is_op("-") ? Expr::Kind::Neg : Expr::Kind::Pos, at);
      advance();
      node->children.push_back(parse_unary(false));
    } else {
      node = parse_primary();
    }
    node = parse_postfix(std::move(node));
    if (with_filter) node = parse_filter_expr(std::move(node));
    return node;
  }

  ExprPtr literal(const Token& at, Value v) {
    auto e = make<Expr>(Expr::Kind::Literal, at);
    e->literal = std::move(v);
    return e;
  }

  ExprPtr parse_primary() {
    const Token& t = cur();
    switch (t.type) {
      case TokenType::Name: {
        advance();
        if (t.value == "true" || t.value == "True") return literal(t, Value::from_bool(true));
        if (t.value == "false" || t.value == "False") return literal(t, Value::from_bool(false));
        if (t.value == "none" || t.value == "None") return literal(t, Value::none());
        auto e = make<Expr>(Expr::Kind::Name, t);
        e->name = t.value;
        return e;
      }
      case TokenType::String: {
        std::string s = t.value;
        advance();
        while (cur().type == TokenType::String) {  // adjacent literals concatenate
          s += cur().value;
          advance();
        }
        return literal(t, Value::from_string(std::move(s)));
      }
      case TokenType::Int:
        advance();
        return literal(t, Value::from_int(t.int_value));
      case TokenType::Float:
        advance();
        return literal(t, Value::from_float(t.float_value));
      case TokenType::Op:
        if (t.value == "(") {
          advance();
          if (skip_op(")")) return make<Expr>(Expr::Kind::Tuple, t);
          ExprPtr first = parse_expression(true);
          if (skip_op(")")) return first;
          auto tuple = make<Expr>(Expr::Kind::Tuple, t);
          tuple->children.push_back(std::move(first));
          while (skip_op(",")) {
            if (is_op(")")) break;
            tuple->children.push_back(parse_expression(true));
          }
          expect_op(")");
          return tuple;
        }
        if (t.value == "[") {
          advance();
          auto list = make<Expr>(Expr::Kind::List, t);
          while (!is_op("]")) {
            if (!list->children.empty()) expect_op(",");
            if (is_op("]")) break;
            list->children.push_back(parse_expression(true));
          }
          expect_op("]");
          return list;
        }
        if (t.value == "{") {
          advance();
          auto dict = make<Expr>(Expr::Kind::Dict, t);
          while (!is_op("}")) {
            if (!dict->children.empty()) expect_op(",");
            if (is_op("}")) break;
            dict->children.push_back(parse_expression(true));
            expect_op(":");
            dict->children.push_back(parse_expression(true));
          }
          expect_op("}");
          return dict;
        }
        break;
      default:
        break;
    }
    error_at(t, fmt::format("unexpected {} in an expression", describe(t)));
  }

  ExprPtr parse_postfix(ExprPtr node) {
    int n = 0;
    while (true) {
      count_chain(n, cur());
      const Token& at = cur();
      if (is_op(".")) {
        advance();
        if (cur().type == TokenType::Int) {  // x.0 is x[0]
          auto e = make<Expr>(Expr::Kind::GetItem, at);
          e->children.push_back(std::move(node));
          e->children.push_back(literal(cur(), Value::from_int(cur().int_value)));
          advance();
          node = std::move(e);
          continue;
        }
        auto e = make<Expr>(Expr::Kind::GetAttr, at);
        e->name = expect_name("an attribute name after '.'");
        e->children.push_back(std::move(node));
        node = std::move(e);
      } else if (is_op("[")) {
        advance();
        node = parse_subscript(std::move(node), at);
      } else if (is_op("(")) {
        node = parse_call(std::move(node));
      } else {
        return node;
      }
    }
  }

  ExprPtr parse_subscript(ExprPtr node, const Token& at) {
    ExprPtr parts[3];
    bool slice = false;
    for (int i = 0; i < 3; ++i) {
      if (!is_op(":") && !is_op("]")) parts[i] = parse_expression(true);
      if (i < 2 && skip_op(":")) {
        slice = true;
        continue;
      }
      break;
    }
    expect_op("]");
    if (!slice) {
      if (!parts[0]) error_at(at, "empty subscript");
      auto e = make<Expr>(Expr::Kind::GetItem, at);
      e->children.push_back(std::move(node));
      e->children.push_back(std::move(parts[0]));
      return e;
    }
    auto e = make<Expr>(Expr::Kind::Slice, at);
    e->children.push_back(std::move(node));
    for (auto& p : parts) e->children.push_back(std::move(p));
    return e;
  }

  // ( args ) onto `call` (whose children[0] is already set).
  void parse_call_args(Expr& call) {
    expect_op("(");
    bool first = true;
    while (!is_op(")")) {
      if (!first) expect_op(",");
      first = false;
      if (is_op(")")) break;
      if (is_op("*") || is_op("**")) error_at(cur(), "*args and **kwargs are not supported");
      if (cur().type == TokenType::Name && peek().type == TokenType::Op && peek().value == "=") {
        std::string key = cur().value;
        advance();
        advance();
        call.kwargs.emplace_back(std::move(key), parse_expression(true));
      } else {
        if (!call.kwargs.empty()) error_at(cur(), "positional argument after keyword argument");
        call.children.push_back(parse_expression(true));
      }
    }
    expect_op(")");
  }

  // A call is reported at its callee, where the reader looks.
  ExprPtr parse_call(ExprPtr node) {
    auto e = make<Expr>(Expr::Kind::Call, cur());
    e->line = node->line;
    e->column = node->column;
    e->children.push_back(std::move(node));
    parse_call_args(*e);
    return e;
  }

  // `| name(args) | name ...` onto `node` (null in filter blocks and block sets).
  ExprPtr parse_filters(ExprPtr node, const Token& at, bool start_inline = false) {
    int n = 0;
    while (start_inline || is_op("|")) {
      count_chain(n, cur());
      if (!start_inline) advance();
      start_inline = false;
      auto f = make<Expr>(Expr::Kind::Filter, cur());
      f->name = expect_name("a filter name");
      while (is_op(".")) {
        advance();
        f->name += "." + expect_name("a filter name");
      }
      f->children.push_back(std::move(node));
      if (is_op("(")) parse_call_args(*f);
      node = std::move(f);
    }
    return node;
  }

  ExprPtr parse_filter_expr(ExprPtr node) {
    int n = 0;
    while (true) {
      count_chain(n, cur());
      if (is_op("|")) {
        node = parse_filters(std::move(node), cur());
      } else if (is_name("is")) {
        node = parse_test(std::move(node));
      } else if (is_op("(")) {
        node = parse_call(std::move(node));
      } else {
        return node;
      }
    }
  }

  ExprPtr parse_test(ExprPtr node) {
    const Token& at = cur();
    advance();  // is
    const bool negated = skip_name("not");
    auto t = make<Expr>(Expr::Kind::Test, at);
    t->name = expect_name("a test name after 'is'");
    t->negated = negated;
    t->children.push_back(std::move(node));
    if (is_op("(")) {
      parse_call_args(*t);
    } else if ((cur().type == TokenType::Name || cur().type == TokenType::String ||
                cur().type == TokenType::Int || cur().type == TokenType::Float || is_op("[") ||
                is_op("{")) &&
               !is_name("else") && !is_name("or") && !is_name("and")) {
      if (is_name("is")) error_at(cur(), "tests cannot be chained with 'is'");
      t->children.push_back(parse_postfix(parse_primary()));
    }
    return t;
  }

  std::vector<Token> tokens_;
  std::size_t pos_ = 0;
  const std::string& origin_;
  int depth_ = 0;
  int loop_depth_ = 0;
  int macro_depth_ = 0;
};

}  // namespace

std::shared_ptr<const Program> parse_template(std::string_view source, const std::string& origin) {
  if (!valid_utf8(source))
    throw TemplateError(fmt::format("{}: the template is not valid UTF-8", origin));
  const std::string normalized = normalize_source(source);
  auto program = std::make_shared<Program>();
  program->origin = origin;
  program->body = Parser(tokenize(normalized, origin), origin).parse_all();
  return program;
}

}  // namespace strata::text::jinja
