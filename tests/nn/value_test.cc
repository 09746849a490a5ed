// Value, Args, send_to_device and find_device (accelerate-semantics.md §1.15.11).

#include "nn/nn_testing.h"

namespace strata::testing {
namespace {

struct Cache : Object {
  std::string_view type_name() const override { return "Cache"; }
  Tensor keys = Tensor::zeros({2});
};

TEST(ValueTest, KindsAndAccessors) {
  EXPECT_TRUE(Value().is_none());
  EXPECT_EQ(Value(3).to_int(), 3);
  EXPECT_EQ(Value(std::int64_t{-7}).kind(), Value::Kind::Int);
  EXPECT_DOUBLE_EQ(Value(2.5).to_double(), 2.5);
  EXPECT_DOUBLE_EQ(Value(4).to_double(), 4.0);  // ints widen
  EXPECT_TRUE(Value(true).to_bool());
  EXPECT_EQ(Value("text").kind(), Value::Kind::String);  // not bool
  EXPECT_EQ(Value("text").string(), "text");
  const Tensor t = Tensor::ones({2, 3});
  EXPECT_TRUE(Value(t).tensor().storage().is_same(t.storage()));  // a shared handle
  Value list = ValueList{Value(1), Value("a")};
  EXPECT_EQ(list.list().size(), 2u);
  Value dict = ValueDict{{"b", Value(1)}, {"a", Value(2)}};
  EXPECT_EQ(dict.dict().keys_str(), "b, a");  // insertion order
  auto cache = std::make_shared<Cache>();
  Value object(cache);
  EXPECT_EQ(object.object_as<Cache>(), cache);
}

TEST(ValueTest, WrongKindNamesExpectedAndFound) {
  EXPECT_TRUE(throws_naming<InvalidArgument>([] { (void)Value(3).tensor(); }, {"tensor", "int 3"}));
  EXPECT_TRUE(
      throws_naming<InvalidArgument>([] { (void)Value("x").to_int(); }, {"int", "string 'x'"}));
  EXPECT_TRUE(throws_naming<InvalidArgument>([] { (void)Value().list(); }, {"list", "none"}));
  struct Other : Object {};
  Value other(std::make_shared<Other>());
  EXPECT_TRUE(throws_naming<InvalidArgument>([&] { (void)other.object_as<Cache>(); }, {"object"}));
}

TEST(ValueTest, DictSetKeepsPositionAndAtNamesKeys) {
  ValueDict d;
  d.set("x", 1);
  d.set("y", 2);
  d.set("x", 3);
  EXPECT_EQ(d.keys_str(), "x, y");
  EXPECT_EQ(d.at("x").to_int(), 3);
  EXPECT_TRUE(throws_naming<InvalidArgument>([&] { (void)d.at("z"); }, {"'z'", "x, y"}));
  EXPECT_TRUE(d.erase("x"));
  EXPECT_FALSE(d.erase("x"));
  EXPECT_EQ(d.size(), 1u);
}

TEST(ValueTest, ArgsTensorNamesCaller) {
  Args args{Value(1)};
  EXPECT_TRUE(throws_naming<InvalidArgument>([&] { (void)args.tensor(0, "Linear.forward"); },
                                             {"Linear.forward", "argument 0", "int 1"}));
  EXPECT_TRUE(throws_naming<InvalidArgument>([&] { (void)args.tensor(3, "Foo.forward"); },
                                             {"Foo.forward", "3", "1 positional"}));
}

// Meta is a real target on a CPU-only machine, so these check the walk itself.
TEST(SendToDeviceTest, WalksNestedListsAndDicts) {
  const Tensor t = Tensor::ones({2});
  auto cache = std::make_shared<Cache>();
  Value nested = ValueList{Value(t), Value(ValueDict{{"inner", Value(ValueList{Value(t)})}}),
                           Value(5), Value("s"), Value(cache)};
  Value moved = send_to_device(nested, Device::meta());
  EXPECT_TRUE(moved.list()[0].tensor().is_meta());
  EXPECT_TRUE(moved.list()[1].dict().at("inner").list()[0].tensor().is_meta());
  EXPECT_EQ(moved.list()[2].to_int(), 5);
  EXPECT_EQ(moved.list()[3].string(), "s");
  EXPECT_EQ(moved.list()[4].object_as<Cache>(), cache);  // objects pass through untouched
  EXPECT_TRUE(cache->keys.is_cpu());
  EXPECT_TRUE(nested.list()[0].tensor().is_cpu());  // the input is not modified
}

TEST(SendToDeviceTest, SkipKeysApplyAtEveryNestingLevel) {
  // The reference's observation: {"a": t, "b": {"a": t2, "c": t3}} with skip "a" leaves both "a"
  // on the cpu and moves b.c.
  const Tensor t = Tensor::ones({1});
  Value value =
      ValueDict{{"a", Value(t)}, {"b", Value(ValueDict{{"a", Value(t)}, {"c", Value(t)}})}};
  const std::vector<std::string> skip = {"a"};
  Value moved = send_to_device(value, Device::meta(), skip);
  EXPECT_TRUE(moved.dict().at("a").tensor().is_cpu());
  EXPECT_TRUE(moved.dict().at("b").dict().at("a").tensor().is_cpu());
  EXPECT_TRUE(moved.dict().at("b").dict().at("c").tensor().is_meta());
}

TEST(SendToDeviceTest, NoDeviceIsANoOpAndSameDeviceDoesNotCopy) {
  const Tensor t = Tensor::ones({3});
  EXPECT_TRUE(send_to_device(Value(t), std::nullopt).tensor().is_cpu());
  EXPECT_TRUE(send_to_device(Value(t), Device::cpu()).tensor().storage().is_same(t.storage()));
}

TEST(SendToDeviceTest, ArgsSkipKeysOnlyForKeywords) {
  const Tensor t = Tensor::ones({1});
  Args args{Value(ValueDict{{"mask", Value(t)}})};
  args.keywords.set("mask", t);
  args.keywords.set("x", t);
  const std::vector<std::string> skip = {"mask"};
  send_to_device(args, Device::meta(), skip);
  // The reference sends positional arguments without skip keys.
  EXPECT_TRUE(args.positional[0].dict().at("mask").tensor().is_meta());
  EXPECT_TRUE(args.keywords.at("mask").tensor().is_cpu());
  EXPECT_TRUE(args.keywords.at("x").tensor().is_meta());
}

TEST(FindDeviceTest, FirstTensorDepthFirst) {
  const Tensor cpu = Tensor::ones({1});
  const Tensor meta = Tensor::empty({1}, DType::Float32, Device::meta());
  EXPECT_EQ(find_device(Value(ValueList{Value(1), Value(ValueList{Value(meta)}), Value(cpu)})),
            Device::meta());
  EXPECT_EQ(find_device(Value(ValueDict{{"a", Value(2)}, {"b", Value(cpu)}})), Device::cpu());
  EXPECT_EQ(find_device(Value(ValueList{Value(1), Value("x")})), std::nullopt);
  Args args;
  args.keywords.set("k", meta);
  EXPECT_EQ(find_device(args), Device::meta());
  args.positional.push_back(cpu);
  EXPECT_EQ(find_device(args), Device::cpu());  // positional before keywords
}

}  // namespace
}  // namespace strata::testing
