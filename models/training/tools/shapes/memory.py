"""Memory chats: the user says something about themselves, then asks the assistant to recall it.

Each fact kind: (how the user says it, how the assistant acknowledges it, the recall question,
the values; `{Value}` is the value with a capital first letter). Written for ngsd.
"""

NAMES = [
    "Priya", "Tomasz", "Aisha", "Mateo", "Yuki", "Oluwaseun", "Freya", "Dmitri", "Leila",
    "Sean", "Mei", "Rafael", "Ingrid", "Kwame", "Sofia", "Arjun", "Chloe", "Hamid", "Elena",
    "Jonas", "Amara", "Luca", "Nadia", "Kenji", "Grace", "Omar", "Hannah", "Diego", "Zainab",
    "Finn", "Ayesha", "Mikael", "Rosa", "Tariq", "Lena", "Carlos", "Noor", "Bjorn", "Fatima",
    "Ethan",
]

FACTS = [
    ("Hi, I'm {name}.", "Hi {name}, nice to meet you! What can I help you with today?",
     "What is my name?", [None]),
    ("Hello! My name is {name} and I live in {value}.", "Nice to meet you, {name}. {Value} sounds like a lovely place. How can I help?",
     "Where did I say I live?", ["Leeds", "Porto", "Nairobi", "Osaka", "Calgary", "Tbilisi", "Adelaide", "Kraków"]),
    ("I'm {name}, and my dog is called {value}.", "Hi {name}! {Value} is a great name for a dog.",
     "What's my dog called again?", ["Biscuit", "Pepper", "Mango", "Ziggy", "Olive", "Rocket", "Juno", "Tofu"]),
    ("Hey, {name} here. I work as a {value}.", "Hi {name}! Being a {value} must keep you busy. What do you need today?",
     "Do you remember what my job is?", ["nurse", "bus driver", "software tester", "baker", "librarian", "electrician", "pharmacist", "primary school teacher"]),
    ("My name's {name}. Just so you know, I'm allergic to {value}.", "Thanks for telling me, {name}. I'll keep your allergy to {value} in mind.",
     "What did I say I'm allergic to?", ["peanuts", "shellfish", "sesame", "penicillin", "cats", "strawberries", "gluten", "bee stings"]),
    ("I'm {name}. My daughter just turned {value}.", "Happy birthday to your daughter, {name}! {Value} is a fun age.",
     "How old did I say my daughter is?", ["four", "seven", "ten", "twelve", "fifteen", "three", "nine", "six"]),
    ("Hi, I'm {name} and my favourite colour is {value}.", "Hi {name}! {Value} is a great choice.",
     "What's my favourite colour?", ["teal", "orange", "deep purple", "forest green", "yellow", "navy blue", "red", "silver"]),
    ("I'm {name}, I'm learning {value} at the moment.", "That's great, {name}! Learning {value} takes dedication.",
     "Which language did I say I'm learning?", ["Korean", "Portuguese", "Swahili", "German", "Italian", "Arabic", "Dutch", "Polish"]),
]

# Short exchanges that can sit between the introduction and the recall question.
MIDDLES = [
    ("Can you recommend a podcast about history?", "You could try 'The Rest Is History' or 'Hardcore History'; both tell big stories in an engaging way."),
    ("What's a quick breakfast idea?", "Overnight oats: mix oats, milk and yoghurt in a jar, add fruit, and leave it in the fridge overnight."),
    ("How do I stay focused while studying?", "Work in 25-minute blocks with short breaks, silence your phone, and set one clear goal per session."),
    ("Any tips for a long flight?", "Drink water, walk around every couple of hours, wear comfy layers and bring a neck pillow."),
    ("How do I keep my plants alive while I'm on holiday?", "Water them well, group them in a shady spot, and use self-watering spikes or a bath with a wet towel."),
]
