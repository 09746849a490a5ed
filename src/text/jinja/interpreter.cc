#include "text/jinja/interpreter.h"

#include <fmt/format.h>

#include <chrono>

#include "strata/text/chat_template.h"
#include "text/jinja/errors.h"

namespace strata::text::jinja {
namespace {

// jinja2's sandbox refuses range() longer than this (MAX_RANGE).
constexpr std::int64_t kMaxRange = 100000;

struct Frame {
  const Frame* parent = nullptr;
  std::vector<std::pair<std::string, Value>> vars;

  const Value* find(const std::string& name) const {
    for (const Frame* f = this; f; f = f->parent) {
      for (auto it = f->vars.rbegin(); it != f->vars.rend(); ++it) {
        if (it->first == name) return &it->second;
      }
    }
    return nullptr;
  }
  void set(const std::string& name, Value v) {
    for (auto& [k, old] : vars) {
      if (k == name) {
        old = std::move(v);
        return;
      }
    }
    vars.emplace_back(name, std::move(v));
  }
};

enum class Flow { Normal, Break, Continue };

class Interpreter {
 public:
  Interpreter(const Program& program, const RenderInputs& inputs)
      : program_(program), inputs_(inputs), limits_(inputs.limits) {
    add_globals();
  }

  ~Interpreter() {
    // A namespace can hold itself (`set ns.me = ns`): break such cycles so nothing leaks.
    for (auto& d : namespaces_) d->clear();
    globals_.clear();
  }

  std::string run() {
    CreationBudget budget(kMaxCreatedBytes);
    std::string out;
    out_ = &out;
    Frame root;
    root_ = &root;
    exec_body(program_.body, root);
    return out;
  }

 private:
  // --- errors -------------------------------------------------------------------------------
  template <typename Fn>
  auto at_position(int line, int column, Fn&& fn) -> decltype(fn()) {
    try {
      return fn();
    } catch (const RenderError& e) {
      throw TemplateError(fmt::format("{}:{}:{}: {}", program_.origin, line, column, e.what()));
    } catch (const RaisedError& e) {
      throw TemplateRaisedError(fmt::format("{}:{}:{}: the template raised an error: {}",
                                            program_.origin, line, column, e.what()),
                                e.what());
    }
  }

  struct DepthGuard {
    explicit DepthGuard(Interpreter& i) : i_(i) {
      if (++i_.depth_ > i_.limits_.max_depth) {
        fail("RecursionError: the template nests or recurses deeper than {} levels",
             i_.limits_.max_depth);
      }
    }
    ~DepthGuard() { --i_.depth_; }
    Interpreter& i_;
  };

  void write(const std::string& s) {
    if (out_->size() + s.size() > limits_.max_string) {
      fail("the output would exceed {} bytes", limits_.max_string);
    }
    *out_ += s;
  }

  // --- globals ------------------------------------------------------------------------------
  void add_globals() {
    for (const auto& [k, v] : inputs_.variables) globals_.emplace_back(k, v);
    builtin("raise_exception", [](CallArgs& a) -> Value {
      ArgReader r("raise_exception", a, {"message"});
      throw RaisedError(python_str(r.get(0)));
    });
    builtin("strftime_now", [this](CallArgs& a) {
      ArgReader r("strftime_now", a, {"format"});
      return Value::from_string(strftime_now(r.string_or(0, "")));
    });
    builtin("range", [this](CallArgs& a) { return range(a); });
    builtin("namespace", [this](CallArgs& a) {
      Dict d;
      for (const Value& p : a.positional) {
        if (p.kind != Value::Kind::Dict) fail("namespace() takes keyword arguments or a dict");
        for (const auto& kv : *p.entries) dict_set(d, kv.first, kv.second);
      }
      for (auto& [k, v] : a.keyword) dict_set(d, Value::from_string(k), v);
      Value ns = Value::make_namespace(std::move(d));
      namespaces_.push_back(ns.entries);
      return ns;
    });
    builtin("dict", [](CallArgs& a) {
      if (!a.positional.empty()) fail("dict() takes keyword arguments only");
      Dict d;
      for (auto& [k, v] : a.keyword) dict_set(d, Value::from_string(k), v);
      return Value::from_dict(std::move(d));
    });
  }

  void builtin(const char* name, std::function<Value(CallArgs&)> fn) {
    for (const auto& [k, _] : globals_) {
      if (k == name) return;  // a render variable of that name wins
    }
    globals_.emplace_back(name, Value::make_function(name, std::move(fn)));
  }

  std::string strftime_now(const std::string& format) {
    std::tm tm{};
    if (inputs_.now) {
      tm = *inputs_.now;
    } else {
      const std::time_t t = std::time(nullptr);
      localtime_r(&t, &tm);
    }
    if (format.empty()) return "";
    for (std::size_t size = 256; size <= (std::size_t{1} << 20); size *= 4) {
      std::string buf(size, '\0');
      const std::size_t n = std::strftime(buf.data(), buf.size(), format.c_str(), &tm);
      if (n > 0) return buf.substr(0, n);
    }
    return "";  // a format that formats to nothing
  }

  Value range(CallArgs& a) {
    if (!a.keyword.empty()) fail("range() takes no keyword arguments");
    std::int64_t v[3] = {0, 0, 1};
    for (const Value& p : a.positional) {
      if (p.kind != Value::Kind::Int && p.kind != Value::Kind::Bool) {
        fail("TypeError: range() takes integers, not {}", type_name(p));
      }
    }
    const auto& p = a.positional;
    auto iv = [](const Value& x) { return x.kind == Value::Kind::Bool ? x.boolean : x.integer; };
    if (p.size() == 1) {
      v[1] = iv(p[0]);
    } else if (p.size() == 2 || p.size() == 3) {
      v[0] = iv(p[0]);
      v[1] = iv(p[1]);
      if (p.size() == 3) v[2] = iv(p[2]);
    } else {
      fail("TypeError: range expected 1 to 3 arguments, got {}", p.size());
    }
    if (v[2] == 0) fail("ValueError: range() arg 3 must not be zero");
    const long double count =
        v[2] > 0
            ? std::max<long double>(0, std::ceil(((long double)v[1] - v[0]) / v[2]))
            : std::max<long double>(0, std::ceil(((long double)v[0] - v[1]) / -(long double)v[2]));
    if (count > kMaxRange) {
      fail("OverflowError: range too big, maximum size for range is {}", kMaxRange);
    }
    List out;
    for (std::int64_t i = 0; i < static_cast<std::int64_t>(count); ++i) {
      out.push_back(Value::from_int(v[0] + i * v[2]));
    }
    return Value::from_list(std::move(out));
  }

  Value lookup(const Frame& frame, const std::string& name) const {
    if (const Value* v = frame.find(name)) return *v;
    for (const auto& [k, v] : globals_) {
      if (k == name) return v;
    }
    return Value::undefined("'" + name + "' is undefined");
  }

  // --- statements ---------------------------------------------------------------------------
  Flow exec_body(const Body& body, Frame& frame) {
    for (const NodePtr& n : body) {
      const Flow f = exec(*n, frame);
      if (f != Flow::Normal) return f;
    }
    return Flow::Normal;
  }

  Flow exec(const Node& n, Frame& frame) {
    return at_position(n.line, n.column, [&] {
      DepthGuard guard(*this);
      return exec_node(n, frame);
    });
  }

  Flow exec_node(const Node& n, Frame& frame) {
    switch (n.kind) {
      case Node::Kind::Text:
        write(n.text);
        return Flow::Normal;
      case Node::Kind::Output:
        write(python_str(eval(*n.expr, frame)));
        return Flow::Normal;
      case Node::Kind::If:
        for (const auto& [cond, body] : n.branches) {
          if (!cond || truthy(eval(*cond, frame))) return exec_body(body, frame);
        }
        return Flow::Normal;
      case Node::Kind::For:
        exec_for(n, frame);
        return Flow::Normal;
      case Node::Kind::Set: {
        Value v = eval(*n.expr, frame);
        if (!n.attribute.empty()) {
          const Value target = lookup(frame, n.targets[0]);
          if (target.kind != Value::Kind::Namespace) {
            fail("cannot assign attribute '{}' on {} '{}': only a namespace() takes attributes",
                 n.attribute, type_name(target), n.targets[0]);
          }
          dict_set(*target.entries, Value::from_string(n.attribute), std::move(v));
        } else {
          assign(frame, n.targets, std::move(v));
        }
        return Flow::Normal;
      }
      case Node::Kind::SetBlock: {
        Value captured = Value::from_string(capture(n.body, frame));
        if (n.expr) captured = apply_filter_chain(*n.expr, std::move(captured), frame);
        frame.set(n.targets[0], std::move(captured));
        return Flow::Normal;
      }
      case Node::Kind::FilterBlock: {
        Value captured = Value::from_string(capture(n.body, frame));
        write(python_str(apply_filter_chain(*n.expr, std::move(captured), frame)));
        return Flow::Normal;
      }
      case Node::Kind::Macro: {
        const Node* macro = &n;
        frame.set(n.name, Value::make_function(n.name, [this, macro](CallArgs& a) {
                    return call_macro(*macro, a);
                  }));
        return Flow::Normal;
      }
      case Node::Kind::Break:
        return Flow::Break;
      case Node::Kind::Continue:
        return Flow::Continue;
    }
    return Flow::Normal;
  }

  std::string capture(const Body& body, Frame& frame) {
    std::string buffer;
    std::string* saved = out_;
    out_ = &buffer;
    try {
      exec_body(body, frame);
    } catch (...) {
      out_ = saved;
      throw;
    }
    out_ = saved;
    return buffer;
  }

  void assign(Frame& frame, const std::vector<std::string>& targets, Value v) {
    if (targets.size() == 1) {
      frame.set(targets[0], std::move(v));
      return;
    }
    const List items = iterate(v);
    if (items.size() != targets.size()) {
      fail("ValueError: cannot unpack {} values into {} names", items.size(), targets.size());
    }
    for (std::size_t i = 0; i < targets.size(); ++i) frame.set(targets[i], items[i]);
  }

  void exec_for(const Node& n, Frame& frame) {
    const Value iterable = eval(*n.expr, frame);
    if (iterable.is_none() || iterable.is_number() || iterable.is_callable() ||
        iterable.kind == Value::Kind::Namespace) {
      fail("TypeError: '{}' object is not iterable", type_name(iterable));
    }
    List items = iterate(iterable);
    if (n.filter) {
      List kept;
      for (Value& item : items) {
        Frame f{&frame, {}};
        assign(f, n.targets, item);
        count_iteration();
        if (truthy(eval(*n.filter, f))) kept.push_back(std::move(item));
      }
      items = std::move(kept);
    }
    if (items.empty()) {
      Frame f{&frame, {}};
      exec_body(n.else_body, f);
      return;
    }
    const auto length = static_cast<std::int64_t>(items.size());
    for (std::int64_t i = 0; i < length; ++i) {
      count_iteration();
      Frame f{&frame, {}};
      assign(f, n.targets, items[i]);
      if (n.uses_loop) f.set("loop", loop_value(items, i));
      if (exec_body(n.body, f) == Flow::Break) break;
    }
  }

  void count_iteration() {
    if (++iterations_ > limits_.max_iterations) {
      fail("the template ran more than {} loop iterations", limits_.max_iterations);
    }
  }

  static Value loop_value(const List& items, std::int64_t i) {
    const auto length = static_cast<std::int64_t>(items.size());
    Dict d;
    auto put = [&](const char* k, Value v) { d.emplace_back(Value::from_string(k), std::move(v)); };
    put("index0", Value::from_int(i));
    put("index", Value::from_int(i + 1));
    put("revindex0", Value::from_int(length - i - 1));
    put("revindex", Value::from_int(length - i));
    put("first", Value::from_bool(i == 0));
    put("last", Value::from_bool(i == length - 1));
    put("length", Value::from_int(length));
    put("depth", Value::from_int(1));
    put("depth0", Value::from_int(0));
    if (i > 0) put("previtem", items[i - 1]);
    if (i + 1 < length) put("nextitem", items[i + 1]);
    put("cycle", Value::make_function("loop.cycle", [i](CallArgs& a) {
          if (a.positional.empty()) fail("loop.cycle() needs at least one value");
          return a.positional[static_cast<std::size_t>(i) % a.positional.size()];
        }));
    return Value::from_dict(std::move(d));
  }

  Value call_macro(const Node& macro, CallArgs& args) {
    DepthGuard guard(*this);
    if (args.positional.size() > macro.params.size()) {
      fail("TypeError: macro '{}' takes not more than {} argument(s)", macro.name,
           macro.params.size());
    }
    Frame f{root_, {}};
    std::vector<bool> bound(macro.params.size(), false);
    for (std::size_t i = 0; i < args.positional.size(); ++i) {
      f.set(macro.params[i].first, args.positional[i]);
      bound[i] = true;
    }
    for (auto& [k, v] : args.keyword) {
      std::size_t i = 0;
      while (i < macro.params.size() && macro.params[i].first != k) ++i;
      if (i == macro.params.size())
        fail("TypeError: macro '{}' takes no keyword argument '{}'", macro.name, k);
      if (bound[i])
        fail("TypeError: macro '{}' got multiple values for argument '{}'", macro.name, k);
      f.set(k, v);
      bound[i] = true;
    }
    for (std::size_t i = 0; i < macro.params.size(); ++i) {
      if (bound[i]) continue;
      const auto& [name, def] = macro.params[i];
      f.set(name, def ? eval(*def, f) : Value::undefined("'" + name + "' is undefined"));
    }
    return Value::from_string(capture(macro.body, f));
  }

  // --- expressions --------------------------------------------------------------------------
  Value eval(const Expr& e, const Frame& frame) {
    return at_position(e.line, e.column, [&] {
      DepthGuard guard(*this);
      return eval_expr(e, frame);
    });
  }

  CallArgs eval_args(const Expr& e, const Frame& frame, std::size_t first) {
    CallArgs args;
    for (std::size_t i = first; i < e.children.size(); ++i)
      args.positional.push_back(eval(*e.children[i], frame));
    for (const auto& [k, v] : e.kwargs) args.keyword.emplace_back(k, eval(*v, frame));
    return args;
  }

  Value apply_filter_chain(const Expr& e, Value base, const Frame& frame) {
    return at_position(e.line, e.column, [&] {
      Value v = e.children[0] ? apply_filter_chain(*e.children[0], std::move(base), frame)
                              : std::move(base);
      CallArgs args = eval_args(e, frame, 1);
      return apply_filter(e.name, v, args, limits_);
    });
  }

  Value eval_expr(const Expr& e, const Frame& frame) {
    using K = Expr::Kind;
    switch (e.kind) {
      case K::Literal:
        return e.literal;
      case K::Name:
        return lookup(frame, e.name);
      case K::List:
      case K::Tuple: {
        List items;
        for (const auto& c : e.children) items.push_back(eval(*c, frame));
        return e.kind == K::List ? Value::from_list(std::move(items))
                                 : Value::from_tuple(std::move(items));
      }
      case K::Dict: {
        Dict d;
        for (std::size_t i = 0; i + 1 < e.children.size(); i += 2) {
          Value k = eval(*e.children[i], frame);
          if (k.is_sequence() && k.kind == Value::Kind::List)
            fail("TypeError: unhashable type: 'list'");
          if (k.kind == Value::Kind::Dict) fail("TypeError: unhashable type: 'dict'");
          dict_set(d, std::move(k), eval(*e.children[i + 1], frame));
        }
        return Value::from_dict(std::move(d));
      }
      case K::GetAttr:
        return get_attribute(eval(*e.children[0], frame), e.name);
      case K::GetItem:
        return get_item(eval(*e.children[0], frame), eval(*e.children[1], frame));
      case K::Slice: {
        auto part = [&](std::size_t i) {
          return e.children[i] ? eval(*e.children[i], frame) : Value::none();
        };
        return slice_value(eval(*e.children[0], frame), part(1), part(2), part(3));
      }
      case K::Call: {
        const Value callee = eval(*e.children[0], frame);
        CallArgs args = eval_args(e, frame, 1);
        if (callee.is_callable()) return callee.function->call(args);
        if (callee.is_undefined()) fail("{} (calling it as a function)", undefined_reason(callee));
        fail("TypeError: '{}' object is not callable", type_name(callee));
      }
      case K::Filter: {
        Value v = eval(*e.children[0], frame);
        CallArgs args = eval_args(e, frame, 1);
        return apply_filter(e.name, v, args, limits_);
      }
      case K::Test: {
        Value v = eval(*e.children[0], frame);
        CallArgs args = eval_args(e, frame, 1);
        return Value::from_bool(apply_test(e.name, v, args) != e.negated);
      }
      case K::Neg:
        return negate(eval(*e.children[0], frame));
      case K::Pos: {
        Value v = eval(*e.children[0], frame);
        if (!v.is_number()) fail("TypeError: bad operand type for unary +: '{}'", type_name(v));
        return v.kind == Value::Kind::Bool ? Value::from_int(v.boolean) : v;
      }
      case K::Not:
        return Value::from_bool(!truthy(eval(*e.children[0], frame)));
      case K::Binary:
        return binary_op(e.name, eval(*e.children[0], frame), eval(*e.children[1], frame), limits_);
      case K::Compare: {
        Value left = eval(*e.children[0], frame);
        for (std::size_t i = 0; i < e.ops.size(); ++i) {
          Value right = eval(*e.children[i + 1], frame);
          if (!compare(e.ops[i], left, right)) return Value::from_bool(false);
          left = std::move(right);
        }
        return Value::from_bool(true);
      }
      case K::And: {
        Value l = eval(*e.children[0], frame);
        return truthy(l) ? eval(*e.children[1], frame) : l;
      }
      case K::Or: {
        Value l = eval(*e.children[0], frame);
        return truthy(l) ? l : eval(*e.children[1], frame);
      }
      case K::Cond:
        if (truthy(eval(*e.children[1], frame))) return eval(*e.children[0], frame);
        return e.children[2] ? eval(*e.children[2], frame)
                             : Value::undefined("the conditional expression has no else branch");
    }
    fail("unknown expression");
  }

  static bool compare(const std::string& op, const Value& a, const Value& b) {
    if (op == "==") return equals(a, b);
    if (op == "!=") return !equals(a, b);
    if (op == "<") return less_than(a, b);
    if (op == ">") return less_than(b, a);
    if (op == "<=") return less_than(a, b) || equals(a, b);
    if (op == ">=") return less_than(b, a) || equals(a, b);
    if (op == "in") return contains(b, a);
    if (op == "notin") return !contains(b, a);
    fail("unknown comparison '{}'", op);
  }

  const Program& program_;
  const RenderInputs& inputs_;
  const Limits limits_;
  std::vector<std::pair<std::string, Value>> globals_;
  std::vector<std::shared_ptr<Dict>> namespaces_;
  std::string* out_ = nullptr;
  const Frame* root_ = nullptr;
  std::int64_t iterations_ = 0;
  int depth_ = 0;
};

}  // namespace

std::string render_program(const Program& program, const RenderInputs& inputs) {
  Interpreter interpreter(program, inputs);
  try {
    return interpreter.run();
  } catch (const RenderError& e) {
    throw TemplateError(fmt::format("{}: {}", program.origin, e.what()));
  }
}

}  // namespace strata::text::jinja
