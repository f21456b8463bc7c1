from slug import slugify

assert slugify("hello world") == "hello-world"
assert slugify("Hello, World!") == "hello-world", slugify("Hello, World!")
assert slugify("  Déjà vu 2  ") == "d-j-vu-2", slugify("  Déjà vu 2  ")
print("ok: 3 tests passed")
